"""Forks wait for a person, per commit, and run only on untrusted hosts: GitHub's real
``pull_request`` payload from a fork, processed against PostgreSQL, then the API."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import (
    AuditEvent,
    Build,
    Environment,
    Host,
    Installation,
    Repository,
    Service,
    WebhookDelivery,
    utcnow,
)
from controlplane.services import (
    catalog,
    envactions,
    feedback,
    githubwrites,
    hosts,
    previews,
    servicerules,
)
from controlplane.services.outcomes import HandlerContext
from controlplane.settings import Settings
from tests.fixtures.github import GitHubAppKey
from tests.githubserver.server import GitHubServer
from tests.helpers import json_payload

REPO_ID = 4242
REPOSITORY = "Codertocat/Hello-World"
FIRST = "a" * 40
SECOND = "b" * 40


@pytest.fixture
def service(database: Database) -> int:
    return seed(database)


def seed(database: Database) -> int:
    """Service ``hello`` on trusted host web-1, untrusted host sandbox-1 for forks."""
    with database.session_scope() as session:
        session.add(Installation(id=1, account_login="Codertocat"))
        session.add(Repository(id=REPO_ID, installation_id=1, full_name=REPOSITORY))
        hosts.create_host(session, "web-1", "test")
        hosts.create_host(session, "sandbox-1", "test", untrusted=True)
        created = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello",
                repository=REPOSITORY,
                branch="master",
                host="web-1",
                domain="hello.example.com",
            ),
            "test",
        )
        return created.id


def deliver(
    database: Database,
    action: str,
    sha: str = FIRST,
    *,
    number: int = 2,
    fork: bool = True,
) -> str:
    """Process one signed-and-stored ``pull_request`` delivery (GitHub's recorded payload)."""
    payload = copy.deepcopy(json_payload("pull_request__opened.payload.json"))
    payload["action"] = action
    payload["number"] = payload["pull_request"]["number"] = number
    payload["repository"]["id"] = REPO_ID
    head = payload["pull_request"]["head"]
    head["sha"] = sha
    head["ref"] = "fork-change"
    head["repo"]["full_name"] = "someone/Hello-World" if fork else REPOSITORY
    payload["pull_request"]["base"]["ref"] = "master"
    with database.session_scope() as session:
        delivery = WebhookDelivery(
            guid=f"{action}-{number}-{sha[:4]}-{utcnow().timestamp()}",
            event="pull_request",
            action=action,
            installation_id=1,
            repository_id=REPO_ID,
            repository_full_name=REPOSITORY,
            body=json.dumps(payload),
        )
        session.add(delivery)
        session.flush()
        outcome = previews.handle_pull_request(
            session, delivery, HandlerContext(None, "previews.test")
        )
        return outcome.reason


def environment(db_session: Session, number: int = 2) -> Environment:
    db_session.expire_all()
    env = db_session.scalar(select(Environment).where(Environment.name == f"hello-pr-{number}"))
    assert env is not None
    return env


def builds(db_session: Session) -> list[Build]:
    db_session.expire_all()
    return list(db_session.scalars(select(Build).order_by(Build.id)))


def host_id(db_session: Session, name: str) -> int:
    found = db_session.scalar(select(Host.id).where(Host.name == name))
    assert found is not None
    return found


def set_service(database: Database, service_id: int, **values: Any) -> None:
    with database.session_scope() as session:
        row = session.get(Service, service_id)
        assert row is not None
        for name, value in values.items():
            setattr(row, name, value)


# -- waiting for a person -------------------------------------------------------------------


def test_a_fork_pr_waits_for_approval_on_an_untrusted_host_and_builds_nothing(
    database: Database, db_session: Session, service: int
) -> None:
    reason = deliver(database, "opened")

    env = environment(db_session)
    assert env.status == "awaiting_approval" and "awaiting_approval" in reason
    assert env.from_fork and env.head_sha == FIRST and env.approved_sha is None
    assert f"portside previews approve hello-pr-2 --sha {FIRST}" in (env.status_reason or "")
    assert f"/v1/environments/{env.id}/approve" in (env.status_reason or "")
    assert env.host_id == host_id(db_session, "sandbox-1")
    assert builds(db_session) == []
    # The same head delivered again still builds nothing.
    deliver(database, "reopened")
    assert builds(db_session) == [] and environment(db_session).status == "awaiting_approval"


def test_a_same_repository_pr_is_built_at_once_as_before(
    database: Database, db_session: Session, service: int
) -> None:
    deliver(database, "opened", fork=False)

    env = environment(db_session)
    assert env.status == "pending" and not env.from_fork
    assert env.host_id == host_id(db_session, "web-1")
    assert [(b.commit_sha, b.untrusted) for b in builds(db_session)] == [(FIRST, False)]


def test_fork_previews_switched_off_create_nothing(
    database: Database, db_session: Session, service: int
) -> None:
    set_service(database, service, fork_previews=False)

    assert "targets no tracked branch" in deliver(database, "opened")
    assert db_session.scalar(select(Environment).where(Environment.kind == "preview")) is None


def test_approving_the_head_builds_it_untrusted_and_a_push_waits_again(
    client: Any,
    database: Database,
    db_session: Session,
    service: int,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
) -> None:
    deliver(database, "opened")
    env = environment(db_session)
    url = f"/v1/environments/{env.id}/approve"

    assert client.post(url, json={"sha": FIRST}, headers=read_headers).status_code == 403
    stale = client.post(url, json={"sha": SECOND}, headers=admin_headers)
    assert stale.status_code == 409 and FIRST in json.dumps(stale.json)
    assert client.post(url, json={"sha": "nope"}, headers=admin_headers).status_code == 422
    assert builds(db_session) == []

    approved = client.post(url, json={"sha": FIRST}, headers=admin_headers)

    assert approved.status_code == 200, approved.json
    (build,) = builds(db_session)
    assert (build.commit_sha, build.untrusted) == (FIRST, True)
    assert approved.json["build_id"] == build.id
    assert approved.json["approved_sha"] == FIRST and approved.json["status"] == "building"
    assert approved.json["status_reason"] is None and approved.json["from_fork"] is True
    # The answer says what the preview now waits for: the approved commit's build.
    assert f"waiting for build #{build.id} (queued" in approved.json["pending_reason"]
    audit = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "environment.approve")
    ).all()
    assert [(a.actor, a.detail["sha"]) for a in audit] == [("token:test-admin", FIRST)]
    # Approving the same commit again starts nothing new.
    assert client.post(url, json={"sha": FIRST}, headers=admin_headers).json["build_id"] is None

    deliver(database, "synchronize", SECOND)

    env = environment(db_session)
    assert (env.status, env.head_sha, env.approved_sha) == ("awaiting_approval", SECOND, FIRST)
    assert SECOND in (env.status_reason or "")
    (build,) = builds(db_session)  # nothing of the new head; the old build is cancelled
    assert build.status == "cancelled"
    assert (
        client.post(f"/v1/environments/{env.id}/redeploy", headers=admin_headers).status_code == 409
    )
    assert client.post(url, json={"sha": FIRST}, headers=admin_headers).status_code == 409

    again = client.post(url, json={"sha": SECOND}, headers=admin_headers)

    assert again.status_code == 200 and again.json["approved_sha"] == SECOND
    assert [(b.commit_sha, b.untrusted) for b in builds(db_session)] == [
        (FIRST, True),
        (SECOND, True),
    ]


def test_only_open_fork_previews_are_approved(
    client: Any,
    database: Database,
    db_session: Session,
    service: int,
    admin_headers: dict[str, str],
) -> None:
    deliver(database, "opened", fork=False)
    same_repo = environment(db_session)
    production = db_session.scalar(select(Environment).where(Environment.kind == "production"))
    assert production is not None
    for env_id in (same_repo.id, production.id):
        refused = client.post(
            f"/v1/environments/{env_id}/approve", json={"sha": FIRST}, headers=admin_headers
        )
        assert refused.status_code == 409 and "fork" in refused.json["message"]
    deliver(database, "opened", number=3)
    deliver(database, "closed", number=3)
    closed = environment(db_session, 3)
    refused = client.post(
        f"/v1/environments/{closed.id}/approve", json={"sha": FIRST}, headers=admin_headers
    )
    assert refused.status_code == 409 and "closed" in refused.json["message"]
    missing = client.post(
        "/v1/environments/999999/approve", json={"sha": FIRST}, headers=admin_headers
    )
    assert missing.status_code == 404


def test_secrets_are_approved_per_commit_too(
    client: Any,
    database: Database,
    db_session: Session,
    service: int,
    admin_headers: dict[str, str],
) -> None:
    deliver(database, "opened")
    env = environment(db_session)
    url = f"/v1/environments/{env.id}/approve-secrets"

    assert client.post(url, json={"sha": SECOND}, headers=admin_headers).status_code == 409
    granted = client.post(url, json={"sha": FIRST}, headers=admin_headers)

    assert granted.status_code == 200 and granted.json["secrets_approved_sha"] == FIRST
    assert environment(db_session).secrets_approved_for(FIRST)
    deliver(database, "synchronize", SECOND)
    env = environment(db_session)
    assert not env.secrets_approved_for(env.head_sha)
    granted = client.post(url, json={"sha": SECOND}, headers=admin_headers)
    assert granted.json["secrets_approved_sha"] == SECOND


@pytest.mark.parametrize("body", [None, {}, {"sha": None}, {"sha": ""}])
@pytest.mark.parametrize("action", ["approve", "approve-secrets"])
def test_an_approval_must_name_the_commit_reviewed(
    client: Any,
    database: Database,
    db_session: Session,
    service: int,
    admin_headers: dict[str, str],
    action: str,
    body: dict[str, Any] | None,
) -> None:
    """Approving "whatever the head is now" would approve a push made after the review."""
    deliver(database, "opened")
    env = environment(db_session)

    refused = client.post(f"/v1/environments/{env.id}/{action}", json=body, headers=admin_headers)

    assert refused.status_code == 422, refused.json
    assert refused.json["error"] == "validation_failed" and "sha" in refused.json["details"]["json"]
    env = environment(db_session)
    assert (env.status, env.approved_sha, env.secrets_approved_sha) == (
        "awaiting_approval",
        None,
        None,
    )
    assert builds(db_session) == []
    approvals = select(AuditEvent).where(AuditEvent.action.startswith("environment.approve"))
    assert db_session.scalars(approvals).all() == []


# -- where forks run ------------------------------------------------------------------------


def test_without_an_untrusted_host_a_fork_preview_is_refused_until_one_exists(
    client: Any,
    database: Database,
    db_session: Session,
    service: int,
    admin_headers: dict[str, str],
) -> None:
    with database.session_scope() as session:
        sandbox = session.scalar(select(Host).where(Host.name == "sandbox-1"))
        assert sandbox is not None
        sandbox.untrusted = False
    deliver(database, "opened")
    env = environment(db_session)
    assert env.status == "refused"
    assert "portside hosts create NAME --untrusted" in (env.status_reason or "")
    approved = client.post(
        f"/v1/environments/{env.id}/approve", json={"sha": FIRST}, headers=admin_headers
    )
    assert approved.status_code == 200 and approved.json["status"] == "refused"
    assert builds(db_session) == []

    created = client.post(
        "/v1/hosts", json={"name": "sandbox-2", "untrusted": True}, headers=admin_headers
    )
    assert created.status_code == 201 and created.json["untrusted"] is True
    approved = client.post(
        f"/v1/environments/{env.id}/approve", json={"sha": FIRST}, headers=admin_headers
    )

    assert approved.status_code == 200 and approved.json["host"] == "sandbox-2"
    assert [(b.commit_sha, b.untrusted) for b in builds(db_session)] == [(FIRST, True)]


def test_forks_go_to_the_least_loaded_untrusted_host_never_one_with_production(
    database: Database, db_session: Session, service: int
) -> None:
    with database.session_scope() as session:
        hosts.create_host(session, "sandbox-2", "test", untrusted=True)
        hosts.create_host(session, "sandbox-3", "test", untrusted=True)
        third = session.scalar(select(Host).where(Host.name == "sandbox-3"))
        assert third is not None
        # A production environment on an untrusted host (made by hand, before the rule).
        session.add(
            Environment(
                service_id=service, host_id=third.id, name="legacy", kind="production", branch="x"
            )
        )
    for number in (2, 3, 4):
        deliver(database, "opened", number=number)

    placed = [environment(db_session, n).host.name for n in (2, 3, 4)]

    assert placed == ["sandbox-1", "sandbox-2", "sandbox-1"]


def test_an_admin_may_let_a_services_forks_run_on_trusted_hosts(
    database: Database, db_session: Session, service: int
) -> None:
    set_service(database, service, fork_previews_on_trusted_hosts=True)

    deliver(database, "opened")

    env = environment(db_session)
    assert env.status == "awaiting_approval"
    assert env.host_id == host_id(db_session, "web-1")


def test_an_untrusted_host_never_gets_production(
    client: Any, service: int, admin_headers: dict[str, str]
) -> None:
    spec = {"name": "other", "repository": REPOSITORY, "host": "sandbox-1"}

    created = client.post("/v1/services", json=spec, headers=admin_headers)
    moved = client.patch(
        f"/v1/services/{service}", json={"host": "sandbox-1"}, headers=admin_headers
    )

    assert created.status_code == 422 and "untrusted" in created.json["message"]
    assert moved.status_code == 422 and "untrusted" in moved.json["message"]
    listed = client.get("/v1/hosts", headers=admin_headers).json
    assert {h["name"]: h["untrusted"] for h in listed} == {"sandbox-1": True, "web-1": False}


def test_service_fork_placement_and_compose_allow_are_admin_settings_audited(
    client: Any,
    db_session: Session,
    service: int,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
) -> None:
    url = f"/v1/services/{service}"
    change = {"compose_allow": ["sysctls", "cap_add", "cap_add"]}
    assert client.patch(url, json=change, headers=read_headers).status_code == 403
    bad = client.patch(url, json={"compose_allow": ["cap add"]}, headers=admin_headers)
    assert bad.status_code == 422

    changed = client.patch(
        url, json={**change, "fork_previews_on_trusted_hosts": True}, headers=admin_headers
    )
    client.patch(url, json={"compose_allow": []}, headers=admin_headers)

    assert changed.status_code == 200
    assert changed.json["compose_allow"] == ["cap_add", "sysctls"]
    assert changed.json["fork_previews_on_trusted_hosts"] is True
    events = db_session.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "service.compose_allow")
        .order_by(AuditEvent.id)
    ).all()
    assert [(e.detail["old"], e.detail["new"]) for e in events] == [
        ([], ["cap_add", "sysctls"]),
        (["cap_add", "sysctls"], []),
    ]


# -- what GitHub is told --------------------------------------------------------------------


def test_github_gets_a_pending_status_and_a_comment_saying_how_to_approve(
    database: Database,
    db_session: Session,
    service: int,
    settings: Settings,
    github_server: GitHubServer,
    github_app_key: GitHubAppKey,
) -> None:
    state = github_server.state
    state.add_installation(1, "Codertocat")
    state.add_repository(1, REPOSITORY, "master")
    head = state.commit(REPOSITORY, {"index.html": "from a fork\n"}, branch="fork-change")
    state.add_pull_request(REPOSITORY, 2, "fork-change", base_ref="master")
    github = GitHubApp(github_app_key.app_id, github_app_key.private_key_pem, github_server.url)
    deliver(database, "opened", head)
    env = environment(db_session)

    with database.session_scope() as session:
        feedback.send(session, github, settings, "awaiting_approval", env.id)

    (status,) = state.statuses
    assert (status.sha, status.state, status.context) == (head, "pending", githubwrites.CONTEXT)
    assert status.description == "Waiting for a maintainer to approve this commit"
    (comment,) = state.comments
    assert f"portside previews approve hello-pr-2 --sha {head}" in comment.body
    assert f"/v1/environments/{env.id}/approve" in comment.body
    # Once approved, a late event says nothing more.
    with database.session_scope() as session:
        envactions.approve(session, env.id, "test", head)
    with database.session_scope() as session:
        feedback.send(session, github, settings, "awaiting_approval", env.id)
    assert len(state.statuses) == 1 and len(state.comments) == 1
