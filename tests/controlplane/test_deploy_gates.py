"""Deployment gates against the test GitHub server: a service that waits for checks builds
at once and deploys once the commit's required checks passed (learned from check_suite,
check_run and status deliveries, or beat's poll when a delivery is lost), never on a red or
timed-out one; a newer push supersedes a waiting build; an environment that requires
approval holds each deployment until an admin approves it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import (
    AuditEvent,
    Build,
    Environment,
    Installation,
    Repository,
    WebhookDelivery,
    utcnow,
)
from controlplane.services import (
    builds,
    catalog,
    checks,
    deliveries,
    feedback,
    githubwrites,
    hosts,
    pushes,
    rollbacks,
    servicerules,
    tokens,
)
from controlplane.services.deployments import record_deployment
from controlplane.services.outcomes import HandlerContext
from controlplane.settings import Settings
from tests.controlplane.test_feedback_github import until_through
from tests.fixtures.github import GitHubAppKey
from tests.githubserver.server import GitHubServer, GitHubState
from tests.helpers import webhook_headers

REPOSITORY = "Codertocat/Hello-World"
CI_APP = 31337  # another App on the repository: the team's CI
DIGEST = "sha256:" + "cd" * 32


@pytest.fixture
def github_app(github_server: GitHubServer, github_app_key: GitHubAppKey) -> GitHubApp:
    state = github_server.state
    state.add_installation(1, "Codertocat")
    state.add_repository(1, REPOSITORY, "main")
    state.commit(REPOSITORY, {"index.html": "main\n"})
    return GitHubApp(github_app_key.app_id, github_app_key.private_key_pem, github_server.url)


@pytest.fixture
def service_id(database: Database, github_server: GitHubServer, github_app: GitHubApp) -> int:
    """A service on main, production running a first commit (deployed before any gate)."""
    with database.session_scope() as session:
        session.add(Installation(id=1, account_login="Codertocat"))
        session.add(
            Repository(
                id=github_server.state.repository(REPOSITORY).id,
                installation_id=1,
                full_name=REPOSITORY,
            )
        )
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository=REPOSITORY, branch="main", host="web-1"
            ),
            "test",
        )
        service_id = service.id
    first = built(database, github_server.state, service_id, "v1\n")
    with database.session_scope() as session:
        deployment = record_deployment(session, service_id, first, "test")
        assert deployment is not None
        deployment.status, deployment.activated_at = "active", utcnow()  # its agent said so
        deployment.environment.status = "running"
    return service_id


def built(database: Database, state: GitHubState, service_id: int, text: str) -> int:
    """A new commit on main, built (its images pushed): ready to record its deployment."""
    sha = state.commit(REPOSITORY, {"index.html": text})
    with database.session_scope() as session:
        service = catalog.get_service(session, service_id)
        build = pushes.start_build(
            session, service, pushes.production_environment(session, service), sha, branch="main"
        )
        assert build is not None
        build.images = {"app": {"repository": "registry.test/hello", "tag": "t", "digest": DIGEST}}
        session.flush()
        return build.id


def record(database: Database, service_id: int, build_id: int) -> int | None:
    """What the build worker's last step does; the deployment's id, None when held."""
    with database.session_scope() as session:
        deployment = record_deployment(session, service_id, build_id, "worker")
        return deployment.id if deployment is not None else None


def state_of(database: Database, build_id: int) -> dict[str, Any]:
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        environment = build.environment
        current = environment.current_deployment
        return {
            "build": build.status,
            "error": build.error,
            "environment": environment.status,
            "reason": environment.status_reason,
            "deployed": current.build_id if current is not None else None,
            "held": environment.held_build_id,
            "sha": build.commit_sha,
        }


def deliver(
    client: FlaskClient, database: Database, github: GitHubApp, event: str, payload: Any
) -> str:
    """Post a delivery as GitHub does and process it as the control worker does."""
    body = json.dumps(payload).encode()
    response = client.post("/webhooks/github", data=body, headers=webhook_headers(event, body))
    assert response.status_code in (200, 202), response.json
    delivery_id = int(response.json["id"])  # type: ignore[index]
    with database.session_scope() as session:
        deliveries.process(session, delivery_id, HandlerContext(github))
    with database.session_scope() as session:
        outcome = session.scalar(
            select(WebhookDelivery.outcome).where(WebhookDelivery.id == delivery_id)
        )
    return str(outcome)


def wait_for_checks(
    client: FlaskClient, admin: dict[str, str], service_id: int, required: list[str]
) -> None:
    response = client.patch(
        f"/v1/services/{service_id}",
        json={"deploy_when": "checks_passed", "required_checks": required, "checks_timeout": 600},
        headers=admin,
    )
    assert response.status_code == 200, response.json
    assert response.json["deploy_when"] == "checks_passed"  # type: ignore[index]


def poll(database: Database, github: GitHubApp) -> list[str]:
    with database.session_scope() as session:
        return checks.poll(session, github)


def test_a_build_waits_for_the_required_check_and_deploys_once_it_is_green(
    client: FlaskClient,
    admin_headers: dict[str, str],
    worker_headers: dict[str, str],
    database: Database,
    settings: Settings,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    state = github_server.state
    wait_for_checks(client, admin_headers, service_id, ["ci/test"])
    build_id = built(database, state, service_id, "v2\n")
    first = state_of(database, build_id)["deployed"]
    with database.session_scope() as session:  # the worker claimed it (only it may deploy it)
        worker = tokens.authenticate(session, worker_headers["Authorization"].split()[1])
        claimed = session.get(Build, build_id)
        assert worker is not None and claimed is not None
        claimed.worker_token_id = worker.id
    answer = client.post(  # the build worker's last step
        f"/v1/services/{service_id}/deployments",
        json={"build_id": build_id},
        headers=worker_headers,
    )
    assert answer.status_code == 202, answer.json
    assert answer.json["id"] is None and answer.json["status"] == "awaiting_checks"  # type: ignore[index]
    assert "waits for the commit's checks" in answer.json["error"]  # type: ignore[index]
    held = state_of(database, build_id)
    assert held["build"] == held["environment"] == "awaiting_checks"
    assert held["deployed"] == first and held["held"] == build_id
    response = client.get(f"/v1/builds/{build_id}", headers=admin_headers)
    assert response.json["status"] == "awaiting_checks"  # type: ignore[index]
    assert "checks" in response.json["waiting_reason"]  # type: ignore[index]

    # The CI runs: another check passing, ours, and a commit status of ours change nothing.
    sha = held["sha"]
    run = state.add_check_run(REPOSITORY, sha, "ci/test", app_id=CI_APP, status="in_progress")
    state.add_check_run(REPOSITORY, sha, "ci/lint", app_id=CI_APP, conclusion="success")
    state.add_commit_status(REPOSITORY, sha, githubwrites.CONTEXT, "success")
    outcome = deliver(
        client,
        database,
        github_app,
        "check_run",
        state.check_run_payload(run, "created", github_server.url),
    )
    assert "ci/test (in_progress)" in outcome
    assert state_of(database, build_id)["build"] == "awaiting_checks"
    reason = client.get(f"/v1/environments?service={service_id}", headers=admin_headers)
    assert "ci/test (in_progress)" in reason.json[0]["pending_reason"]  # type: ignore[index]
    until_through(
        database, lambda s: feedback.send(s, github_app, settings, "build_held", build_id)
    )
    (ours,) = [r for r in state.check_runs if r.external_id == str(build_id)]
    assert ours.status == "in_progress" and "ci/test" in ours.output["title"]

    run.status, run.conclusion = "completed", "success"
    payload = state.check_suite_payload(REPOSITORY, sha, CI_APP, github_server.url)
    outcome = deliver(client, database, github_app, "check_suite", payload)
    assert "checks passed" in outcome
    done = state_of(database, build_id)
    assert (done["build"], done["environment"], done["deployed"], done["held"]) == (
        "succeeded",
        "deploying",
        build_id,
        None,
    )


def test_a_red_check_leaves_production_on_the_previous_commit_with_the_reason(
    client: FlaskClient,
    admin_headers: dict[str, str],
    database: Database,
    settings: Settings,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    state = github_server.state
    wait_for_checks(client, admin_headers, service_id, [])  # every check but ours
    build_id = built(database, state, service_id, "v2\n")
    previous = state_of(database, build_id)["deployed"]
    assert record(database, service_id, build_id) is None
    sha = state_of(database, build_id)["sha"]
    state.add_check_run(REPOSITORY, sha, "ci/test", app_id=CI_APP, conclusion="success")
    status = state.add_commit_status(REPOSITORY, sha, "security/scan", "failure")
    outcome = deliver(
        client, database, github_app, "status", state.status_payload(status, github_server.url)
    )
    assert "security/scan (failure)" in outcome
    failed = state_of(database, build_id)
    assert (failed["build"], failed["deployed"], failed["held"]) == ("failed", previous, None)
    assert "security/scan (failure)" in failed["error"]
    assert failed["environment"] == "running" and failed["reason"] == failed["error"]
    shown = client.get(f"/v1/builds/{build_id}", headers=admin_headers).json
    assert shown["status"] == "failed" and "security/scan" in shown["error"]  # type: ignore[index]

    # GitHub shows it on Portside's own Check Run and status, not as a failed build step.
    until_through(
        database, lambda s: feedback.send(s, github_app, settings, "build_failed", build_id)
    )
    (ours,) = [r for r in state.check_runs if r.external_id == str(build_id)]
    assert ours.conclusion == "failure" and "security/scan (failure)" in ours.output["title"]
    assert ours.output["title"].startswith("checks failed")
    assert [s.state for s in state.statuses if s.context == githubwrites.CONTEXT][-1] == "failure"


def test_a_missed_check_suite_delivery_is_caught_by_the_poll_through_failures_and_pages(
    client: FlaskClient,
    admin_headers: dict[str, str],
    database: Database,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    state = github_server.state
    wait_for_checks(client, admin_headers, service_id, [])
    build_id = built(database, state, service_id, "v2\n")
    assert record(database, service_id, build_id) is None
    sha = state_of(database, build_id)["sha"]
    assert "none reported yet" in poll(database, github_app)[0]
    # 120 contexts: the combined status takes two pages of 100; the last one still pends.
    for number in range(120):
        state.add_commit_status(REPOSITORY, sha, f"ci/shard-{number:03}", "success")
    last = state.add_commit_status(REPOSITORY, sha, "ci/shard-119", "pending")
    state.add_check_run(REPOSITORY, sha, "ci/test", app_id=CI_APP, conclusion="success")
    assert "ci/shard-119 (pending)" in poll(database, github_app)[0]

    last.state = "success"  # its status delivery, and the suite's, are lost
    state.fail("/repos/*/commits/*/status", method="GET", status=502)
    assert "still waiting" in poll(database, github_app)[0]  # GitHub failed: next time
    assert state_of(database, build_id)["build"] == "awaiting_checks"
    assert "checks passed" in poll(database, github_app)[0]
    assert state_of(database, build_id)["deployed"] == build_id
    assert poll(database, github_app) == []


def test_checks_that_do_not_pass_in_time_fail_the_build(
    client: FlaskClient,
    admin_headers: dict[str, str],
    database: Database,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    state = github_server.state
    wait_for_checks(client, admin_headers, service_id, ["ci/test"])
    build_id = built(database, state, service_id, "v2\n")
    previous = state_of(database, build_id)["deployed"]
    assert record(database, service_id, build_id) is None
    sha = state_of(database, build_id)["sha"]
    state.add_check_run(REPOSITORY, sha, "ci/test", app_id=CI_APP, status="in_progress")
    assert "ci/test (in_progress)" in poll(database, github_app)[0]
    with database.session_scope() as session:  # its wait began longer ago than allowed
        build = session.get(Build, build_id)
        assert build is not None and build.held_at is not None
        build.held_at -= dt.timedelta(seconds=601)
    assert "not all passed within 600 s" in poll(database, github_app)[0]
    failed = state_of(database, build_id)
    assert failed["build"] == "failed" and failed["deployed"] == previous
    assert "ci/test (in_progress)" in failed["error"]


def test_a_newer_push_supersedes_the_build_waiting_for_checks(
    client: FlaskClient,
    admin_headers: dict[str, str],
    database: Database,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    state = github_server.state
    wait_for_checks(client, admin_headers, service_id, ["ci/test"])
    waiting = built(database, state, service_id, "v2\n")
    assert record(database, service_id, waiting) is None
    newer = built(database, state, service_id, "v3\n")
    with database.session_scope() as session:
        build = session.get(Build, newer)
        assert build is not None
        assert builds.supersede_older(session, build) == [waiting]
    old = state_of(database, waiting)
    assert old["build"] == "cancelled" and f"build {newer}" in old["error"]
    assert old["held"] is None and old["environment"] != "awaiting_checks"
    sha = old["sha"]
    state.add_check_run(REPOSITORY, sha, "ci/test", app_id=CI_APP, conclusion="success")
    assert poll(database, github_app) == []  # the cancelled build never deploys


def test_an_environment_requiring_approval_holds_until_an_admin_approves(
    client: FlaskClient,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
    database: Database,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    with database.session_scope() as session:
        environment_id = session.scalar(
            select(Environment.id).where(Environment.service_id == service_id)
        )
    url = f"/v1/environments/{environment_id}"
    refused = client.patch(url, json={"approval_required": True}, headers=read_headers)
    assert refused.status_code == 403
    response = client.patch(url, json={"approval_required": True}, headers=admin_headers)
    assert response.status_code == 200 and response.json["approval_required"] is True  # type: ignore[index]

    build_id = built(database, github_server.state, service_id, "v2\n")
    previous = state_of(database, build_id)["deployed"]
    assert record(database, service_id, build_id) is None
    held = state_of(database, build_id)
    assert held["build"] == held["environment"] == "awaiting_approval"
    assert held["deployed"] == previous and "portside approve hello" in held["reason"]

    assert client.post(f"{url}/approve", json={}, headers=read_headers).status_code == 403
    other = "0" * 40
    wrong = client.post(f"{url}/approve", json={"sha": other}, headers=admin_headers)
    assert wrong.status_code == 409
    assert state_of(database, build_id)["build"] == "awaiting_approval"
    approved = client.post(f"{url}/approve", json={"sha": held["sha"]}, headers=admin_headers)
    assert approved.status_code == 200, approved.json
    assert approved.json["deployment_id"] is not None  # type: ignore[index]
    done = state_of(database, build_id)
    assert (done["build"], done["deployed"], done["held"]) == ("succeeded", build_id, None)
    with database.session_scope() as session:
        audited = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "environment.approve")
        ).all()
        assert [(e.target_id, e.detail["sha"]) for e in audited] == [
            (str(environment_id), held["sha"])
        ]
    again = client.post(f"{url}/approve", json={}, headers=admin_headers)
    assert again.status_code == 409  # nothing waits any more


def test_checks_then_approval_both_hold_in_turn(
    client: FlaskClient,
    admin_headers: dict[str, str],
    database: Database,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    state = github_server.state
    wait_for_checks(client, admin_headers, service_id, ["ci/test"])
    with database.session_scope() as session:
        environment_id = session.scalar(
            select(Environment.id).where(Environment.service_id == service_id)
        )
    url = f"/v1/environments/{environment_id}"
    client.patch(url, json={"approval_required": True}, headers=admin_headers)
    build_id = built(database, state, service_id, "v2\n")
    assert record(database, service_id, build_id) is None
    early = client.post(f"{url}/approve", json={}, headers=admin_headers)
    assert early.status_code == 409 and "checks" in early.json["message"]  # type: ignore[index]
    sha = state_of(database, build_id)["sha"]
    state.add_check_run(REPOSITORY, sha, "ci/test", app_id=CI_APP, conclusion="success")
    poll(database, github_app)
    assert state_of(database, build_id)["build"] == "awaiting_approval"
    # Turning approvals off is the approval: the waiting build deploys.
    client.patch(url, json={"approval_required": False}, headers=admin_headers)
    assert state_of(database, build_id)["deployed"] == build_id


def test_deleting_the_service_cancels_a_build_held_for_approval(
    database: Database, github_server: GitHubServer, service_id: int
) -> None:
    with database.session_scope() as session:
        pushes.production_environment(
            session, catalog.get_service(session, service_id)
        ).approval_required = True
    build_id = built(database, github_server.state, service_id, "v2\n")
    assert record(database, service_id, build_id) is None
    with database.session_scope() as session:
        catalog.delete_service(session, service_id, "test")
    gone = state_of(database, build_id)
    assert (gone["build"], gone["environment"], gone["held"]) == ("cancelled", "inactive", None)


def test_a_rollback_while_a_deployment_waits_for_approval_leaves_it_approvable(
    client: FlaskClient,
    admin_headers: dict[str, str],
    database: Database,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    second = built(database, github_server.state, service_id, "v2\n")
    assert record(database, service_id, second) is not None
    with database.session_scope() as session:
        environment = pushes.production_environment(
            session, catalog.get_service(session, service_id)
        )
        environment.approval_required = True
        environment_id = environment.id
    waiting = built(database, github_server.state, service_id, "v3\n")
    assert record(database, service_id, waiting) is None
    with database.session_scope() as session:  # back to the first commit, by hand
        rollbacks.rollback(session, environment_id, None, "test")
    assert state_of(database, waiting)["environment"] == "deploying"

    approved = client.post(f"/v1/environments/{environment_id}/approve", headers=admin_headers)
    assert approved.status_code == 200, approved.json
    assert state_of(database, waiting)["deployed"] == waiting
