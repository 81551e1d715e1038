"""The dashboard's admin forms for tokens, hosts and services: an admin's session and the
form's CSRF token, the secret shown once, the API's own rules for what is refused."""

from __future__ import annotations

import re
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane import dashboard
from controlplane.db import Database
from controlplane.models import ApiToken, Host, Service
from controlplane.services import catalog, hosts, tokens
from tests.dashboard.test_dashboard import csrf_of, log_in, make_token

SECRET = re.compile(r'<pre class="secret" id="secret">([^<]+)</pre>')


def admin(client: FlaskClient, database: Database) -> str:
    assert log_in(client, make_token(database, "admin", "ann")).status_code == 302
    return csrf_of(client.get("/tokens").text)


def test_a_token_is_made_shown_once_and_revoked(
    client: FlaskClient, database: Database, db_session: Session
) -> None:
    csrf = admin(client, database)
    form = {"csrf": csrf, "name": "ci-builder", "scope": "worker", "builds": "untrusted"}

    assert client.post("/tokens", data={**form, "csrf": "forged"}).status_code == 400
    made = client.post("/tokens", data=form)

    assert made.status_code == 200
    found = SECRET.search(made.text)
    assert found is not None
    token = tokens.authenticate(db_session, found.group(1))
    assert token is not None and (token.scope, token.builds) == ("worker", "untrusted")
    listing = client.get("/tokens").text
    assert "ci-builder" in listing and found.group(1) not in listing
    assert client.post("/tokens", data={**form, "scope": "host"}).status_code == 400
    assert client.post("/tokens", data={**form, "scope": "read"}).status_code == 400  # lane

    revoked = client.post(f"/tokens/{token.id}/revoke", data={"csrf": csrf})

    assert revoked.status_code == 302
    db_session.expire_all()
    assert db_session.get(ApiToken, token.id).revoked_at is not None  # type: ignore[union-attr]


def test_a_read_session_can_neither_see_tokens_nor_make_hosts(
    client: FlaskClient, database: Database, db_session: Session
) -> None:
    assert log_in(client, make_token(database, "read", "rita")).status_code == 302
    csrf = csrf_of(client.get("/").text)

    assert client.get("/tokens").status_code == 403
    assert client.post("/hosts", data={"csrf": csrf, "name": "web-9"}).status_code == 403
    assert db_session.scalars(select(Host)).all() == []


def test_a_host_is_made_with_its_agent_token_shown_once(
    client: FlaskClient, database: Database, db_session: Session
) -> None:
    csrf = admin(client, database)

    made = client.post("/hosts", data={"csrf": csrf, "name": "edge-1", "untrusted": "on"})

    assert made.status_code == 200
    found = SECRET.search(made.text)
    assert found is not None
    token = tokens.authenticate(db_session, found.group(1))
    host = db_session.scalar(select(Host).where(Host.name == "edge-1"))
    assert host is not None and host.untrusted
    assert token is not None and token.host_id == host.id
    assert client.post("/hosts", data={"csrf": csrf, "name": "edge-1"}).status_code == 409


def test_a_service_is_refused_by_the_api_rules_and_production_is_not_torn_down(
    client: FlaskClient, database: Database, db_session: Session
) -> None:
    csrf = admin(client, database)
    hosts.create_host(db_session, "web-1", "test")
    db_session.commit()

    nameless = client.post("/services/new", data={"csrf": csrf, "name": "", "host": "web-1"})
    no_source = client.post("/services/new", data={"csrf": csrf, "name": "x", "host": "web-1"})
    bad_port = client.post(
        "/services/new",
        data={"csrf": csrf, "name": "x", "repository": "o/x", "host": "web-1", "port": "eighty"},
    )

    assert (nameless.status_code, no_source.status_code, bad_port.status_code) == (400, 400, 400)
    assert db_session.scalars(select(Service)).all() == []
    made = client.post(
        "/services/new",
        data={"csrf": csrf, "name": "shop", "repository": "o/shop", "host": "web-1"},
    )
    assert made.status_code == 302
    service = catalog.get_service(db_session, int(made.headers["Location"].rsplit("/", 1)[1]))
    (production,) = service.environments
    refused = client.post(f"/environments/{production.id}/teardown", data={"csrf": csrf})
    assert refused.status_code == 409
    assert production.status != "inactive"


def test_the_first_page_lists_what_is_missing(client: FlaskClient, database: Database) -> None:
    assert log_in(client, make_token(database, "read", "rita")).status_code == 302

    page = client.get("/").text

    hint = re.search(r'<div class="notice" id="setup-missing">(.*?)</div>', page, re.S)
    assert hint is not None, page
    for missing in ("GitHub App", "Build worker", "Agent"):
        assert f"<strong>{missing}</strong>" in hint.group(1)


def test_pending_queued_running_and_failed_badges_have_four_colours() -> None:
    css = (Path(dashboard.__file__).parent / "static" / "dashboard.css").read_text()

    def colour(status: str) -> str:
        rule = next(r for r in css.split("}") if re.search(rf"\.badge-{status}\b", r))
        found = re.search(r"color: (var\(--[a-z]+\))", rule)
        assert found is not None, rule
        return found.group(1)

    assert len({colour(s) for s in ("pending", "queued", "running", "failed")}) == 4
