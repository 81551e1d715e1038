"""Registering the GitHub App from the dashboard with GitHub's App manifest flow, against
the project's GitHub test server: the browser's trip to GitHub and back, the code
exchanged for the App's credentials (kept encrypted), a webhook signed with the new
secret accepted, and an installation missed meanwhile caught up by ``portside github sync``."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.app import create_app
from controlplane.db import Database
from controlplane.github import manifest
from controlplane.models import AuditEvent, GitHubAppRegistration, Installation
from controlplane.settings import Secret, Settings
from tests.controlplane.test_github_sync import sync
from tests.dashboard.test_dashboard import csrf_of, log_in, make_token
from tests.githubserver.server import GitHubServer
from tests.helpers import WEBHOOK_SECRET, load_payload, webhook_headers

GITHUB_FORM = re.compile(
    r'<form method="post" action="([^"]+)">\s*<input type="hidden" name="manifest" value="([^"]+)">'
)
MISSED = 7001


@pytest.fixture
def unconfigured(settings: Settings, github_server: GitHubServer) -> Settings:
    """A control plane with no App in its settings: no id, no key, no webhook secret."""
    return dataclasses.replace(
        settings, github_webhook_secret=Secret(""), github_api_url=github_server.url
    )


@pytest.fixture
def setup_client(unconfigured: Settings, database: Database) -> Iterator[FlaskClient]:
    app: Flask = create_app(unconfigured)
    app.config["TESTING"] = True
    yield app.test_client()


def start_registration(client: FlaskClient) -> tuple[str, dict[str, object]]:
    """Press "Register GitHub App": the page's form that posts the manifest to GitHub."""
    csrf = csrf_of(client.get("/setup").text)
    page = client.post(
        "/setup/github",
        data={
            "csrf": csrf,
            "name": "Portside Acme",
            "webhook_url": "https://ci.example/webhooks/github",
        },
    )
    assert page.status_code == 200, page.text
    found = GITHUB_FORM.search(page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1)), json.loads(html.unescape(found.group(2)))


def confirm_on_github(action: str, document: dict[str, object]) -> str:
    """What the person's browser does on GitHub: post the manifest, follow the redirect
    back (returned as the path and query to ask the dashboard for)."""
    answer = requests.post(
        action, data={"manifest": json.dumps(document)}, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["Location"])
    return f"{back.path}?{back.query}"


def test_an_admin_registers_the_app_and_its_webhooks_and_installations_work(
    setup_client: FlaskClient,
    unconfigured: Settings,
    database: Database,
    db_session: Session,
    github_server: GitHubServer,
) -> None:
    client = setup_client
    body = load_payload("installation__created.payload.json")
    refused = client.post(
        "/webhooks/github", data=body, headers=webhook_headers("installation", body)
    )
    assert refused.status_code == 503
    assert log_in(client, make_token(database, "admin")).status_code == 302
    checklist = client.get("/setup").text
    assert "GitHub App</strong>: none yet" in checklist

    action, document = start_registration(client)

    assert action.startswith(f"{github_server.url}/settings/apps/new?state=")
    assert document["hook_attributes"] == {
        "url": "https://ci.example/webhooks/github",
        "active": True,
    }
    assert document["redirect_url"] == f"http://localhost{manifest.CALLBACK_PATH}"
    assert document["default_permissions"] == manifest.PERMISSIONS
    assert set(manifest.EVENTS) <= set(document["default_events"])  # type: ignore[arg-type]

    done = client.get(confirm_on_github(action, document))

    assert done.status_code == 200, done.text
    (converted,) = github_server.state.registered_apps
    assert f"{converted['html_url']}/installations/new" in done.text
    row = db_session.scalar(select(GitHubAppRegistration))
    assert row is not None and row.app_id == converted["id"]
    for secret in ("pem", "webhook_secret", "client_secret"):
        stored = row.__dict__[f"{'private_key' if secret == 'pem' else secret}_encrypted"]
        assert str(converted[secret]).encode() not in stored
    assert db_session.scalar(select(AuditEvent).where(AuditEvent.action == "github_app.register"))
    assert "GitHub App</strong>: portside-acme" in client.get("/setup").text

    # Webhooks signed with the new App's secret are accepted; the old secret is not.
    new_secret = str(converted["webhook_secret"])
    forged = client.post(
        "/webhooks/github", data=body, headers=webhook_headers("installation", body)
    )
    assert forged.status_code == 401
    accepted = client.post(
        "/webhooks/github",
        data=body,
        headers=webhook_headers("installation", body, secret=new_secret),
    )
    assert accepted.status_code == 202, accepted.text
    assert new_secret != WEBHOOK_SECRET

    # An installation made while Portside was down appears after `portside github sync`,
    # which authenticates as the registered App (no App setting given).
    github_server.state.add_installation(MISSED, "latecomer", "Organization")
    github_server.state.add_repository(MISSED, "latecomer/site")
    result = sync(
        unconfigured,
        {
            "PORTSIDE_SECRET_KEY": unconfigured.secret_key.reveal(),
            "PORTSIDE_GITHUB_API_URL": github_server.url,
        },
    )
    assert result.code == 0, result
    assert f"installation {MISSED}: added, 1 repositories, 0 removed" in result.stdout_lines
    assert db_session.get(Installation, MISSED) is not None


def test_a_callback_that_did_not_start_here_is_refused(
    setup_client: FlaskClient, database: Database, db_session: Session, github_server: GitHubServer
) -> None:
    client = setup_client
    assert log_in(client, make_token(database, "admin")).status_code == 302
    action, document = start_registration(client)
    back = confirm_on_github(action, document)
    forged = re.sub(r"state=[^&]+", "state=someone-elses", back)

    assert client.get(forged).status_code == 400
    # The session's state was spent by the refused attempt: the real one fails too.
    assert client.get(back).status_code == 400
    assert db_session.scalar(select(GitHubAppRegistration)) is None
    assert github_server.state.registered_apps == []


def test_registering_needs_an_admin_session_and_the_form_token(
    setup_client: FlaskClient, database: Database
) -> None:
    client = setup_client
    assert log_in(client, make_token(database, "read")).status_code == 302
    csrf = csrf_of(client.get("/setup").text)
    assert client.post("/setup/github", data={"csrf": csrf}).status_code == 403

    client.post("/logout", data={"csrf": csrf})
    assert log_in(client, make_token(database, "admin", "admin-2")).status_code == 302
    assert client.post("/setup/github", data={"csrf": "forged"}).status_code == 400
    assert client.get(f"{manifest.CALLBACK_PATH}?code=abc&state=xyz").status_code == 400
