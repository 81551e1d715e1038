"""A service's page on the dashboard: its environments and recent builds, and the Deploy
form (admin only, the form's CSRF token checked) that deploys a ref through the same
service function as ``POST /v1/services/{id}/deploy``, resolved by the test GitHub."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import AuditEvent, Build
from controlplane.services import catalog
from tests.controlplane.test_build_ordering import commit
from tests.controlplane.test_intake_processing import (
    github_app,  # noqa: F401 (a fixture)
    seeded,  # noqa: F401 (a fixture)
    service,  # noqa: F401 (a fixture)
)
from tests.dashboard.test_dashboard import csrf_of, log_in, make_token
from tests.githubserver.server import GitHubServer

DEPLOY_FORM = re.compile(r'<form class="deploy" method="post" action="(/services/\d+/deploy)">')


@pytest.fixture
def service_id(
    app: Flask,
    db_session: Session,
    github_app: GitHubApp,  # noqa: F811
    service: str,  # noqa: F811
) -> int:
    """Service ``hello`` on master, the dashboard's App pointed at the test GitHub."""
    app.extensions["portside.github"] = github_app
    return catalog.list_services(db_session)[0].id


def builds(db_session: Session) -> list[Build]:
    db_session.expire_all()
    return list(db_session.scalars(select(Build).order_by(Build.id)))


def test_an_admin_deploys_a_ref_from_the_service_page(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    older = commit(github_server, "1\n")
    commit(github_server, "2\n")
    assert log_in(client, make_token(database, "admin", "ops")).status_code == 302
    page = client.get(f"/services/{service_id}")
    assert page.status_code == 200 and "<h1>hello</h1>" in page.text
    assert 'data-environment="hello"' in page.text and "No builds yet." in page.text
    found = DEPLOY_FORM.search(page.text)
    assert found is not None and found.group(1) == f"/services/{service_id}/deploy"
    action, csrf = found.group(1), csrf_of(page.text)
    # The services page links here.
    assert f'href="/services/{service_id}"' in client.get("/").text

    # Without the form's token, with a forged one, or naming a ref GitHub does not know:
    # refused, nothing built.
    assert client.post(action, data={"ref": older}).status_code == 400
    assert client.post(action, data={"ref": older, "csrf": "forged"}).status_code == 400
    unknown = client.post(action, data={"ref": "no-such-branch", "csrf": csrf})
    assert unknown.status_code == 422 and "no-such-branch" in unknown.text
    assert builds(db_session) == []

    response = client.post(action, data={"ref": older, "csrf": csrf})

    (build,) = builds(db_session)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/builds/{build.id}"
    assert (build.commit_sha, build.ref, build.author) == (older, older, "token:ops")
    assert build.environment.kind == "production"
    audit = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "service.deploy"))
    assert audit is not None and audit.actor == "token:ops"
    page = client.get(f"/services/{service_id}").text
    assert f'data-build="{build.id}"' in page

    # An empty ref deploys the head of the service's branch.
    client.post(action, data={"ref": " ", "csrf": csrf})
    assert builds(db_session)[-1].ref == "master"


def test_a_read_token_sees_no_form_and_cannot_deploy(
    client: FlaskClient, database: Database, db_session: Session, service_id: int
) -> None:
    assert log_in(client, make_token(database, "read")).status_code == 302
    page = client.get(f"/services/{service_id}").text
    assert DEPLOY_FORM.search(page) is None

    response = client.post(
        f"/services/{service_id}/deploy", data={"ref": "master", "csrf": csrf_of(page)}
    )

    assert response.status_code == 403 and builds(db_session) == []
    assert client.get("/services/999").status_code == 404
