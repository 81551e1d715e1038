"""Processing deliveries: the installation roster, pushes to builds, the backstop."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import Build, Installation, Repository, Service, WebhookDelivery
from controlplane.services import (
    backstop,
    catalog,
    deliveries,
    hosts,
    servicerules,
    watchpaths,
)
from controlplane.services.outcomes import HandlerContext
from tests.fixtures.github import GitHubAppKey
from tests.githubserver.server import GitHubServer
from tests.helpers import json_payload, webhook_headers

INSTALLATION = 957387
OWNER = "Codertocat"


@pytest.fixture
def github_app(github_server: GitHubServer, github_app_key: GitHubAppKey) -> GitHubApp:
    return GitHubApp(github_app_key.app_id, github_app_key.private_key_pem, github_server.url)


@pytest.fixture
def seeded(github_server: GitHubServer) -> GitHubServer:
    """An installation with a compose repository and a plain one on the test GitHub."""
    state = github_server.state
    state.add_installation(INSTALLATION, OWNER)
    state.add_repository(INSTALLATION, f"{OWNER}/Hello-World", default_branch="master")
    state.commit(
        f"{OWNER}/Hello-World",
        {"compose.yaml": "services:\n  web:\n    build: .\n", "Dockerfile": "FROM scratch\n"},
        branch="master",
    )
    state.add_repository(INSTALLATION, f"{OWNER}/plain")
    state.commit(f"{OWNER}/plain", {"Dockerfile": "FROM scratch\n"})
    state.add_repository(INSTALLATION, f"{OWNER}/later")
    state.commit(f"{OWNER}/later", {"docker-compose.yml": "services: {}\n"})
    return github_server


def _repo_ref(server: GitHubServer, full_name: str) -> dict[str, Any]:
    repo = server.state.repository(full_name)
    return {
        "id": repo.id,
        "node_id": "R_test",
        "name": repo.name,
        "full_name": repo.full_name,
        "private": True,
    }


def post(client: FlaskClient, event: str, payload: dict[str, Any], guid: str | None = None) -> int:
    body = json.dumps(payload).encode()
    headers = webhook_headers(event, body, guid=guid)
    response = client.post("/webhooks/github", data=body, headers=headers)
    assert response.status_code in (200, 202), response.json
    return int(response.json["id"])


def process(database: Database, delivery_id: int, github: GitHubApp | None) -> list[int]:
    with database.session_scope() as session:
        return deliveries.process(session, delivery_id, HandlerContext(github)).builds


def delivery(db_session: Session, delivery_id: int) -> WebhookDelivery:
    db_session.expire_all()
    row = db_session.get(WebhookDelivery, delivery_id)
    assert row is not None
    return row


def install(client: FlaskClient, database: Database, server: GitHubServer, app: GitHubApp) -> None:
    payload = json_payload("installation__created.payload.json")
    payload["installation"]["id"] = INSTALLATION
    payload["repositories"] = [
        _repo_ref(server, f"{OWNER}/Hello-World"),
        _repo_ref(server, f"{OWNER}/plain"),
    ]
    process(database, post(client, "installation", payload), app)


def test_installation_sync_keeps_the_exact_roster_with_compose_detection(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,
    github_app: GitHubApp,
) -> None:
    later = seeded.state.repository(f"{OWNER}/later")
    seeded.state.remove_repository(later.full_name)  # granted only after installing
    install(client, database, seeded, github_app)
    roster = {r.full_name: r.compose_path for r in db_session.scalars(select(Repository))}
    assert roster == {f"{OWNER}/Hello-World": "compose.yaml", f"{OWNER}/plain": None}

    seeded.state.add_repository(INSTALLATION, later.full_name)
    changes = json_payload("installation_repositories__added.payload.json")
    changes["installation"]["id"] = INSTALLATION
    changes["repositories_added"] = [_repo_ref(seeded, f"{OWNER}/later")]
    changes["repositories_removed"] = [_repo_ref(seeded, f"{OWNER}/plain")]
    delivery_id = post(client, "installation_repositories", changes)
    process(database, delivery_id, github_app)
    assert delivery(db_session, delivery_id).status == "processed"

    db_session.expire_all()
    live = {
        r.full_name: r.compose_path
        for r in db_session.scalars(select(Repository).where(Repository.removed_at.is_(None)))
    }
    assert live == {f"{OWNER}/Hello-World": "compose.yaml", f"{OWNER}/later": "docker-compose.yml"}
    later = db_session.scalar(select(Repository).where(Repository.full_name == f"{OWNER}/later"))
    assert later is not None and later.clone_url == f"{seeded.url}/{OWNER}/later.git"
    # Installation tokens were cached: one grant served all the contents calls.
    assert len(seeded.state.tokens) == 1

    gone = json_payload("installation__deleted.payload.json")
    gone["installation"]["id"] = INSTALLATION
    process(database, post(client, "installation", gone), github_app)
    db_session.expire_all()
    installation = db_session.get(Installation, INSTALLATION)
    assert installation is not None and installation.deleted_at is not None
    assert (
        db_session.scalar(
            select(func.count()).select_from(Repository).where(Repository.removed_at.is_(None))
        )
        == 0
    )


@pytest.fixture
def service(
    client: FlaskClient, database: Database, seeded: GitHubServer, github_app: GitHubApp
) -> str:
    install(client, database, seeded, github_app)
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository=f"{OWNER}/Hello-World", branch="master", host="web-1"
            ),
            "test",
        )
    return "hello"


def push_payload(server: GitHubServer, sha: str, pushed_at: int = 1_700_000_000) -> dict[str, Any]:
    """GitHub's recorded branch push, pointed at the test server's repository and commit."""
    payload = copy.deepcopy(json_payload("push__with-new-branch.payload.json"))
    repo = server.state.repository(f"{OWNER}/Hello-World")
    payload["installation"]["id"] = INSTALLATION
    payload["repository"]["id"] = repo.id
    payload["repository"]["pushed_at"] = pushed_at
    payload["after"] = sha
    payload["head_commit"]["id"] = sha
    return payload


def builds(db_session: Session) -> list[tuple[str, str]]:
    db_session.expire_all()
    return [(b.commit_sha, b.status) for b in db_session.scalars(select(Build).order_by(Build.id))]


def test_push_to_tracked_branch_starts_one_build_of_the_after_commit(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,
    github_app: GitHubApp,
    service: str,
) -> None:
    sha = seeded.state.commit(f"{OWNER}/Hello-World", {"app.py": "print(1)\n"}, branch="master")
    payload = push_payload(seeded, sha)
    guid = str(uuid.uuid4())
    delivery_id = post(client, "push", payload, guid=guid)
    started = process(database, delivery_id, github_app)
    assert len(started) == 1
    assert builds(db_session) == [(sha, "queued")]
    # The same delivery again, and a second delivery of the same push: still one build.
    assert post(client, "push", payload, guid=guid) == delivery_id
    assert process(database, delivery_id, github_app) == []
    process(database, post(client, "push", payload), github_app)
    assert builds(db_session) == [(sha, "queued")]


@pytest.mark.parametrize(
    ("payload_name", "reason"),
    [
        ("push__with-installation.payload.json", "tag push"),
        ("push__payload.json", "without an installation"),
    ],
)
def test_real_pushes_that_start_nothing_say_why(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    github_app: GitHubApp,
    service: str,
    payload_name: str,
    reason: str,
) -> None:
    payload = json_payload(payload_name)
    if payload.get("installation"):
        payload["installation"]["id"] = INSTALLATION
    delivery_id = post(client, "push", payload)
    process(database, delivery_id, github_app)
    row = delivery(db_session, delivery_id)
    assert row.status == "ignored"
    assert reason in (row.outcome or "")
    assert builds(db_session) == []


def test_deleted_branch_untracked_branch_and_suspended_installation_start_nothing(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,
    github_app: GitHubApp,
    service: str,
) -> None:
    sha = seeded.state.commit(f"{OWNER}/Hello-World", {"x": "1"}, branch="master")
    deleted = push_payload(seeded, "0" * 40)
    deleted.update(deleted=True, head_commit=None)
    other = push_payload(seeded, sha)
    other["ref"] = "refs/heads/feature/x"
    outcomes = []
    for payload in (deleted, other):
        delivery_id = post(client, "push", payload)
        process(database, delivery_id, github_app)
        outcomes.append(delivery(db_session, delivery_id).outcome)
    assert "was deleted" in (outcomes[0] or "")
    assert "no service tracks" in (outcomes[1] or "")

    suspend = json_payload("installation__suspend.payload.json")
    suspend["installation"]["id"] = INSTALLATION
    process(database, post(client, "installation", suspend), github_app)
    delivery_id = post(client, "push", push_payload(seeded, sha))
    process(database, delivery_id, github_app)
    assert "suspended" in (delivery(db_session, delivery_id).outcome or "")
    assert builds(db_session) == []


def test_watch_paths_filter_pushes(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,
    github_app: GitHubApp,
    service: str,
) -> None:
    with database.session_scope() as session:
        hello = session.scalar(select(Service).where(Service.name == service))
        assert hello is not None
        hello.watch_paths = ["api/**"]
    sha = seeded.state.commit(f"{OWNER}/Hello-World", {"docs/x.md": "x"}, branch="master")
    payload = push_payload(seeded, sha)
    payload["commits"][0].update(added=["docs/x.md"], modified=[], removed=[])
    payload["head_commit"].update(added=["docs/x.md"], modified=[], removed=[])
    delivery_id = post(client, "push", payload)
    process(database, delivery_id, github_app)
    assert "watch paths" in (delivery(db_session, delivery_id).outcome or "")
    payload = push_payload(seeded, sha)
    payload["head_commit"].update(added=[], modified=["api/v1/app.py"], removed=[])
    process(database, post(client, "push", payload), github_app)
    assert builds(db_session) == [(sha, "queued")]


def test_glob_patterns() -> None:
    assert watchpaths.matches_watch_paths(["api/v1/x.py"], ["api/**"])
    assert watchpaths.matches_watch_paths(["api/x.py"], ["api/*.py"])
    assert not watchpaths.matches_watch_paths(["api/v1/x.py"], ["api/*.py"])
    assert watchpaths.matches_watch_paths(["deep/a/b/Dockerfile"], ["**/Dockerfile"])
    assert watchpaths.matches_watch_paths(["Dockerfile"], ["**/Dockerfile"])
    assert watchpaths.matches_watch_paths(["web/index.html"], ["web/"])
    assert not watchpaths.matches_watch_paths(["website/x"], ["web/"])


def test_late_delivery_of_an_older_push_never_replaces_a_newer_one(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,
    github_app: GitHubApp,
    service: str,
) -> None:
    older = seeded.state.commit(f"{OWNER}/Hello-World", {"v": "1"}, branch="master")
    newer = seeded.state.commit(f"{OWNER}/Hello-World", {"v": "2"}, branch="master")
    process(database, post(client, "push", push_payload(seeded, newer, 2_000_000_100)), github_app)
    late = post(client, "push", push_payload(seeded, older, 2_000_000_000))
    process(database, late, github_app)
    assert "newer push" in (delivery(db_session, late).outcome or "")
    assert builds(db_session) == [(newer, "queued")]


def test_backstop_builds_a_missed_push_once(
    database: Database,
    db_session: Session,
    seeded: GitHubServer,
    github_app: GitHubApp,
    service: str,
) -> None:
    missed = seeded.state.commit(f"{OWNER}/Hello-World", {"missed": "1"}, branch="master")
    with database.session_scope() as session:
        started = backstop.reconcile_branches(session, github_app)
    assert len(started) == 1
    with database.session_scope() as session:
        assert backstop.reconcile_branches(session, github_app) == []
    assert builds(db_session) == [(missed, "queued")]


def test_failed_delivery_runs_again_when_redelivered(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,
    github_app: GitHubApp,
) -> None:
    payload = json_payload("installation__created.payload.json")
    payload["installation"]["id"] = INSTALLATION
    payload["repositories"] = [{"id": 1, "name": "gone", "full_name": f"{OWNER}/gone"}]
    guid = str(uuid.uuid4())
    delivery_id = post(client, "installation", payload, guid=guid)
    seeded.state.fail("/installation/repositories", method="GET", status=403)
    process(database, delivery_id, github_app)
    assert delivery(db_session, delivery_id).status == "failed"
    seeded.state.add_repository(INSTALLATION, f"{OWNER}/gone")
    seeded.state.commit(f"{OWNER}/gone", {"compose.yml": "services: {}\n"})
    body = json.dumps(payload).encode()
    again = client.post(
        "/webhooks/github", data=body, headers=webhook_headers("installation", body, guid=guid)
    )
    assert again.status_code == 202
    process(database, delivery_id, github_app)
    row = delivery(db_session, delivery_id)
    assert row.status == "processed" and row.attempts == 2
    gone = select(Repository.compose_path).where(Repository.full_name == f"{OWNER}/gone")
    assert db_session.scalar(gone) == "compose.yml"
