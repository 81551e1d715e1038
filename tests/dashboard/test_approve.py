"""The dashboard's Approve button for a fork preview: an admin's session, the form's CSRF
token and the commit the page showed."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.models import Build, Environment
from tests.controlplane.test_fork_approval import FIRST, SECOND, deliver, seed
from tests.dashboard.test_dashboard import csrf_of, log_in, make_token

APPROVE_FORM = re.compile(
    r'<form class="approve" method="post" action="(/environments/\d+/approve)">\s*'
    r'<input type="hidden" name="csrf" value="[^"]+">\s*'
    r'<input type="hidden" name="sha" value="([0-9a-f]{40})">'
)


def waiting_fork(database: Database, db_session: Session) -> Environment:
    seed(database)
    deliver(database, "opened")
    env = db_session.scalar(select(Environment).where(Environment.name == "hello-pr-2"))
    assert env is not None and env.status == "awaiting_approval"
    return env


def test_an_admin_approves_the_commit_the_page_showed(
    client: FlaskClient, database: Database, db_session: Session
) -> None:
    env = waiting_fork(database, db_session)
    assert log_in(client, make_token(database, "admin")).status_code == 302
    page = client.get("/").text
    found = APPROVE_FORM.search(page)
    assert found is not None, page
    action, sha = found.groups()
    assert (action, sha) == (f"/environments/{env.id}/approve", FIRST)
    assert env.status_reason is not None and env.status_reason.split("`")[0] in page
    csrf = csrf_of(page)

    assert client.post(action, data={"csrf": "forged", "sha": sha}).status_code == 400
    assert client.post(action, data={"csrf": csrf}).status_code == 400
    assert client.post(action, data={"csrf": csrf, "sha": ""}).status_code == 400
    assert client.post(action, data={"csrf": csrf, "sha": SECOND}).status_code == 409
    assert db_session.scalars(select(Build)).all() == []

    response = client.post(action, data={"csrf": csrf, "sha": sha})

    assert response.status_code == 302
    assert response.headers["Location"] == f"/#service-{env.service_id}"
    db_session.expire_all()
    (build,) = db_session.scalars(select(Build))
    assert (build.commit_sha, build.untrusted) == (FIRST, True)
    assert APPROVE_FORM.search(client.get("/").text) is None


def test_a_read_token_sees_no_button_and_cannot_approve(
    client: FlaskClient, database: Database, db_session: Session
) -> None:
    env = waiting_fork(database, db_session)
    assert log_in(client, make_token(database, "read")).status_code == 302
    page = client.get("/").text
    assert APPROVE_FORM.search(page) is None and "awaiting" in page

    response = client.post(
        f"/environments/{env.id}/approve", data={"csrf": csrf_of(page), "sha": FIRST}
    )

    assert response.status_code == 403
    assert db_session.scalars(select(Build)).all() == []


def test_the_hosts_page_says_which_host_is_untrusted(
    client: FlaskClient, database: Database
) -> None:
    seed(database)
    assert log_in(client, make_token(database, "read")).status_code == 302

    page = client.get("/hosts").text

    sandbox = page[page.index("<h2>sandbox-1") :]
    web = page[page.index("<h2>web-1") :]
    assert "untrusted: runs fork previews" in sandbox.split("</section>")[0]
    assert "untrusted" not in web.split("</section>")[0]
