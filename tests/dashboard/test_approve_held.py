"""The dashboard's Approve button releases a deployment held for approval too, from the
services page and the environment's own page: an admin's session, the CSRF token and the
commit the page showed."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.models import AuditEvent, Build
from tests.controlplane.test_approve_cli import held_build
from tests.dashboard.test_approve import APPROVE_FORM
from tests.dashboard.test_dashboard import csrf_of, log_in, make_token


def test_an_admin_releases_the_held_deployment_from_the_environment_page(
    client: FlaskClient, database: Database, db_session: Session
) -> None:
    build_id = held_build(database)
    build = db_session.get(Build, build_id)
    assert build is not None
    environment_id, sha = build.environment_id, build.commit_sha
    assert log_in(client, make_token(database, "read")).status_code == 302
    assert APPROVE_FORM.search(client.get(f"/environments/{environment_id}").text) is None

    assert log_in(client, make_token(database, "admin")).status_code == 302
    assert APPROVE_FORM.search(client.get("/").text) is not None  # the services page too
    page = client.get(f"/environments/{environment_id}").text
    found = APPROVE_FORM.search(page)
    assert found is not None, page
    assert found.groups() == (f"/environments/{environment_id}/approve", sha)

    response = client.post(found.group(1), data={"csrf": csrf_of(page), "sha": sha})

    assert response.status_code == 302
    db_session.expire_all()
    build = db_session.get(Build, build_id)
    assert build is not None and build.status == "succeeded"
    assert build.environment.current_deployment is not None
    assert build.environment.current_deployment.build_id == build_id
    (approval,) = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "environment.approve")
    )
    assert approval.actor.startswith("token:") and approval.detail["sha"] == sha
    assert APPROVE_FORM.search(client.get(f"/environments/{environment_id}").text) is None


def test_the_build_page_says_what_a_held_build_waits_for(
    client: FlaskClient, database: Database
) -> None:
    build_id = held_build(database)
    assert log_in(client, make_token(database, "read")).status_code == 302

    page = client.get(f"/builds/{build_id}").text

    assert 'data-status="awaiting_approval"' in page
    assert f"waiting: build {build_id} of aaaaaaa waits for approval to deploy" in page
