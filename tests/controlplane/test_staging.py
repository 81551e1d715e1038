"""Staging environments (issue 19): ``POST /v1/services/{id}/environments`` makes an
environment of its own kind tracking a branch, which pushes (and the backstop) build and
deploy into it; it has its own domain, is listed beside production, is torn down like a
preview (its images kept) and runs on the agent with production's compose keys."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.agentwire import AgentReport
from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import AuditEvent, Build, Deployment, Environment, Host, Service
from controlplane.services import agentreports, backstop, deployments, snapshots
from controlplane.settings import Settings
from hostagent.snapshot import parse_environment
from tests.controlplane.test_build_ordering import REPOSITORY
from tests.controlplane.test_intake_processing import (
    github_app,  # noqa: F401 (a fixture)
    post,
    process,
    push_payload,
    seeded,  # noqa: F401 (a fixture)
    service,  # noqa: F401 (a fixture)
)
from tests.dashboard.test_dashboard import log_in, make_token
from tests.githubserver.server import GitHubServer

DIGEST = "sha256:" + "5" * 64


@pytest.fixture
def service_id(app: Flask, client: FlaskClient, service: str, db_session: Session) -> int:  # noqa: F811
    """Service ``hello`` (branch master, host web-1) with the domain hello.example.com."""
    row = db_session.scalar(select(Service).where(Service.name == service))
    assert row is not None
    row.domain = "hello.example.com"
    db_session.commit()
    return row.id


def create(
    client: FlaskClient, headers: dict[str, str], service_id: int, name: str, branch: str
) -> Any:
    return client.post(
        f"/v1/services/{service_id}/environments",
        json={"name": name, "branch": branch},
        headers=headers,
    )


def branch_push(
    server: GitHubServer, branch: str, files: dict[str, str], at: int
) -> dict[str, Any]:
    """Commit ``files`` to ``branch`` on the test GitHub; GitHub's push of it."""
    sha = server.state.commit(REPOSITORY, files, branch=branch)
    payload = push_payload(server, sha, pushed_at=at)
    payload["ref"] = f"refs/heads/{branch}"
    return payload


def builds_of(db_session: Session) -> list[tuple[str, str, str]]:
    """(environment, branch, commit) of every build, oldest first."""
    db_session.expire_all()
    return [
        (b.environment.name, b.branch, b.commit_sha)
        for b in db_session.scalars(select(Build).order_by(Build.id))
    ]


def test_a_staging_environment_tracks_its_branch_with_its_own_domain(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service_id: int,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
) -> None:
    created = create(client, admin_headers, service_id, "staging", "develop")

    assert created.status_code == 201, created.json
    body = created.json
    assert (body["name"], body["kind"], body["branch"], body["status"]) == (
        "hello-staging",
        "staging",
        "develop",
        "pending",
    )
    assert body["domain"] == "staging.hello.example.com"
    assert body["host"] == "web-1"
    listed = client.get(f"/v1/environments?service={service_id}", headers=read_headers).json
    assert sorted((e["name"], e["kind"]) for e in listed) == [
        ("hello", "production"),
        ("hello-staging", "staging"),
    ]
    only = client.get("/v1/environments?kind=staging", headers=read_headers).json
    assert [e["name"] for e in only] == ["hello-staging"]
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "environment.create"))
    assert event is not None and event.detail == {"kind": "staging", "branch": "develop"}

    develop = branch_push(seeded, "develop", {"index.html": "next\n"}, 1_700_000_100)
    process(database, post(client, "push", develop), github_app)
    master = branch_push(seeded, "master", {"index.html": "live\n"}, 1_700_000_200)
    process(database, post(client, "push", master), github_app)

    assert builds_of(db_session) == [
        ("hello-staging", "develop", develop["after"]),
        ("hello", "master", master["after"]),
    ]


def test_staging_on_production_s_branch_builds_each_push_for_each(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service_id: int,
    admin_headers: dict[str, str],
) -> None:
    assert create(client, admin_headers, service_id, "qa", "master").status_code == 201
    payload = branch_push(seeded, "master", {"index.html": "both\n"}, 1_700_000_300)

    started = process(database, post(client, "push", payload), github_app)

    sha = payload["after"]
    assert len(started) == 2
    assert sorted(builds_of(db_session)) == [("hello", "master", sha), ("hello-qa", "master", sha)]
    # The same push again starts nothing more.
    assert process(database, post(client, "push", payload), github_app) == []


def test_the_backstop_builds_the_head_of_a_staging_branch(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service_id: int,
    admin_headers: dict[str, str],
) -> None:
    head = seeded.state.commit(REPOSITORY, {"index.html": "missed\n"}, branch="develop")
    assert create(client, admin_headers, service_id, "staging", "develop").status_code == 201

    with database.session_scope() as session:
        started = backstop.reconcile_branches(session, github_app)

    assert ("hello-staging", "develop", head) in builds_of(db_session)
    assert len(started) == 2  # and master's head for production
    with database.session_scope() as session:
        assert backstop.reconcile_branches(session, github_app) == []


@pytest.mark.parametrize(
    ("name", "branch", "field"),
    [
        ("production", "develop", "name"),
        ("preview", "develop", "name"),
        ("pr-3", "develop", "name"),
        ("Sta ging", "develop", "name"),
        ("-staging", "develop", "name"),
        ("staging-", "develop", "name"),
        ("a-seventeen-chars", "develop", "name"),
        ("staging", "a..b", "branch"),
        ("staging", "", "branch"),
    ],
)
def test_a_bad_name_or_branch_is_422(
    client: FlaskClient,
    service_id: int,
    admin_headers: dict[str, str],
    name: str,
    branch: str,
    field: str,
) -> None:
    answer = create(client, admin_headers, service_id, name, branch)

    assert answer.status_code == 422, answer.json
    assert field in answer.json["details"]


def test_a_taken_name_is_409_a_reader_403_and_an_unknown_service_404(
    client: FlaskClient,
    service_id: int,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
) -> None:
    assert create(client, admin_headers, service_id, "staging", "develop").status_code == 201

    again = create(client, admin_headers, service_id, "staging", "main")
    reader = create(client, read_headers, service_id, "qa", "develop")
    missing = create(client, admin_headers, 999, "qa", "develop")

    assert again.status_code == 409 and "hello-staging" in again.json["message"]
    # A service cannot take the name either: its production would be named so.
    clash = client.post(
        "/v1/services",
        json={"name": "hello-staging", "repository": REPOSITORY, "branch": "main", "host": "web-1"},
        headers=admin_headers,
    )
    assert clash.status_code == 409 and "hello-staging" in clash.json["message"]
    assert reader.status_code == 403
    assert missing.status_code == 404


def deploy_newest(database: Database, environment: str) -> int:
    """Record the newest build of ``environment`` deployed (as its worker would, images
    pushed) and, when it became the desired state, active (as its agent would report);
    return the deployment's id."""
    with database.session_scope() as session:
        build = session.scalars(
            select(Build)
            .join(Environment, Build.environment_id == Environment.id)
            .where(Environment.name == environment)
            .order_by(Build.id.desc())
        ).first()
        assert build is not None
        build.images = {
            "app": {"repository": f"r/{REPOSITORY.lower()}", "tag": "t", "digest": DIGEST}
        }
        session.flush()
        deployment = deployments.record_deployment(session, build.service_id, build.id, "test")
        assert deployment is not None
        host = session.get(Host, build.environment.host_id)
        assert host is not None
        report = {
            "generation": host.generation,
            "environments": [
                {
                    "name": environment,
                    "deployment_id": deployment.id,
                    "state": "running",
                    "healthy": True,
                    "address": "127.0.0.1:9000",
                }
            ],
        }
        if deployment.status == "pending":
            agentreports.record_status(session, host, AgentReport.from_json(report))
        return deployment.id


def test_deleting_staging_tears_it_down_keeping_its_images_and_it_can_come_back(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service_id: int,
    admin_headers: dict[str, str],
) -> None:
    staging = create(client, admin_headers, service_id, "staging", "develop").json
    process(
        database,
        post(client, "push", branch_push(seeded, "develop", {"a": "1\n"}, 1_700_000_400)),
        github_app,
    )
    deployment_id = deploy_newest(database, "hello-staging")
    production = client.get(
        f"/v1/environments?service={service_id}&kind=production", headers=admin_headers
    ).json[0]

    gone = client.delete(f"/v1/environments/{staging['id']}", headers=admin_headers)
    refused = client.delete(f"/v1/environments/{production['id']}", headers=admin_headers)

    assert gone.status_code == 204
    assert refused.status_code == 409 and "delete the service" in refused.json["message"]
    db_session.expire_all()
    environment = db_session.get(Environment, staging["id"])
    assert environment is not None
    assert (environment.status, environment.current_deployment_id) == ("inactive", None)
    assert not environment.images_pending  # in production's repository: never deleted
    deployment = db_session.get(Deployment, deployment_id)
    assert deployment is not None and deployment.status == "inactive"
    # A push to develop builds nothing now; created again, it tracks the branch it is given.
    process(
        database,
        post(client, "push", branch_push(seeded, "develop", {"a": "2\n"}, 1_700_000_500)),
        github_app,
    )
    assert len(builds_of(db_session)) == 1
    back = create(client, admin_headers, service_id, "staging", "release")
    assert back.status_code == 201, back.json
    assert (back.json["id"], back.json["branch"], back.json["status"]) == (
        staging["id"],
        "release",
        "pending",
    )


def test_the_agent_takes_staging_with_production_s_compose_keys(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    settings: Settings,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service_id: int,
    admin_headers: dict[str, str],
) -> None:
    assert create(client, admin_headers, service_id, "staging", "develop").status_code == 201
    patched = client.patch(
        f"/v1/services/{service_id}", json={"compose_allow": ["cap_add"]}, headers=admin_headers
    )
    assert patched.status_code == 200, patched.json
    process(
        database,
        post(client, "push", branch_push(seeded, "develop", {"a": "1\n"}, 1_700_000_600)),
        github_app,
    )
    deploy_newest(database, "hello-staging")

    host = db_session.scalar(select(Host).where(Host.name == "web-1"))
    assert host is not None
    state = snapshots.snapshot(db_session, SecretBox.from_settings(settings), host, "r")
    document = state.to_json()
    (entry,) = [e for e in document["environments"] if e["name"] == "hello-staging"]
    parsed = parse_environment(entry, "environments[0]")

    assert (entry["kind"], entry["domains"]) == ("staging", ["staging.hello.example.com"])
    assert entry["image"] == f"r/{REPOSITORY.lower()}@{DIGEST}"
    assert parsed.kind == "staging"
    assert parsed.allowed_compose_keys == {"cap_add"}


def test_the_services_page_lists_staging_beside_production_above_the_previews(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    service_id: int,
    admin_headers: dict[str, str],
) -> None:
    staging = create(client, admin_headers, service_id, "staging", "develop").json
    production = db_session.scalar(select(Environment).where(Environment.name == "hello"))
    assert production is not None
    db_session.add(
        Environment(
            service_id=service_id,
            host_id=production.host_id,
            name="hello-pr-4",
            kind="preview",
            branch="feature",
            pr_number=4,
        )
    )
    db_session.commit()
    assert log_in(client, make_token(database, "read")).status_code == 302

    page = client.get("/").text

    order = [page.index(f'data-environment="{name}"') for name in ("hello", "hello-staging")]
    previews = page.index(">Previews</th>")
    assert order[0] < order[1] < previews < page.index('data-environment="hello-pr-4"')
    assert (
        client.delete(f"/v1/environments/{staging['id']}", headers=admin_headers).status_code == 204
    )
    page = client.get("/").text
    assert 'data-environment="hello-staging"' not in page and "closed preview" not in page
