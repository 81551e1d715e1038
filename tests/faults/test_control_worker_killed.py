"""Deliveries between the commit and the enqueue survive a dead control worker.

A delivery committed while no control worker ran waits in the outbox; one relayed whose
message was then lost is re-driven; and a control worker is SIGKILLed while a stream of
deliveries arrives (wherever it was: relaying, processing, idle). After a restart every
pushed commit has exactly one build: none lost, none twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import Build, WebhookDelivery, utcnow
from controlplane.services import catalog, hosts, servicerules
from controlplane.settings import Settings
from tests.controlplane.test_intake_processing import OWNER, install, post, push_payload
from tests.fixtures.github import GitHubAppKey
from tests.fixtures.processes import Workers, wait_until
from tests.githubserver.server import GitHubServer
from tests.helpers import webhook_headers

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REPOSITORY = f"{OWNER}/Hello-World"
DEADLINE = 90.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Enqueued deliveries are re-driven after 5 s here (120 s by default)."""
    return dataclasses.replace(settings, redrive_after=5)


@pytest.fixture
def tracked(
    client: FlaskClient,
    database: Database,
    github_server: GitHubServer,
    github_app_key: GitHubAppKey,
) -> GitHubServer:
    """The App installed on Hello-World and a service tracking its master branch."""
    github_server.state.add_installation(957387, OWNER)
    github_server.state.add_repository(957387, REPOSITORY, default_branch="master")
    github_server.state.commit(REPOSITORY, {"Dockerfile": "FROM scratch\n"}, branch="master")
    github_server.state.add_repository(957387, f"{OWNER}/plain")
    github_server.state.commit(f"{OWNER}/plain", {"Dockerfile": "FROM scratch\n"})
    app = GitHubApp(github_app_key.app_id, github_app_key.private_key_pem, github_server.url)
    install(client, database, github_server, app)
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        spec = servicerules.ServiceSpec(
            name="hello", repository=REPOSITORY, branch="master", host="web-1"
        )
        catalog.create_service(session, spec, "test")
    return github_server


def new_push(server: GitHubServer, number: int) -> tuple[str, bytes]:
    """A fresh commit on master and GitHub's push delivery body for it.

    All pushes carry the same ``pushed_at``: re-driven deliveries arrive out of order, and
    a late delivery of an older push is (rightly) not built; here every commit must be.
    """
    sha = server.state.commit(REPOSITORY, {"count.txt": f"{number}\n"}, branch="master")
    return sha, json.dumps(push_payload(server, sha, pushed_at=1_700_000_000)).encode()


def builds_by_commit(database: Database) -> dict[str, int]:
    with database.session_scope() as session:
        counted: dict[str, int] = {}
        for sha in session.scalars(select(Build.commit_sha)):
            counted[sha] = counted.get(sha, 0) + 1
        return counted


def statuses(database: Database) -> dict[int, str]:
    with database.session_scope() as session:
        rows = session.execute(select(WebhookDelivery.id, WebhookDelivery.status))
        return {row.id: row.status for row in rows}


def test_deliveries_lost_between_commit_and_enqueue_are_built_exactly_once(
    client: FlaskClient,
    database: Database,
    tracked: GitHubServer,
    worker_processes: Workers,
) -> None:
    expected: list[str] = []

    # 1. Committed while no control worker ran: it waits in the outbox, ``received``.
    sha, body = new_push(tracked, 1)
    waiting = post(client, "push", json.loads(body))
    assert statuses(database)[waiting] == "received"
    expected.append(sha)

    # 2. Relayed, and then its message was lost (Redis restarted empty, say).
    sha, body = new_push(tracked, 2)
    lost = post(client, "push", json.loads(body))
    with database.session_scope() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == lost)
            .values(status="enqueued", enqueued_at=utcnow() - dt.timedelta(minutes=10))
        )
    expected.append(sha)

    # 3. A control worker SIGKILLed while deliveries stream in (killed mid-flight,
    # wherever it was: relaying, processing, or idle).
    first = worker_processes.control()
    for number in range(3, 13):
        sha, body = new_push(tracked, number)
        post(client, "push", json.loads(body))
        expected.append(sha)
    first.kill()
    for number in range(13, 17):  # arriving while no control worker runs
        sha, body = new_push(tracked, number)
        post(client, "push", json.loads(body))
        expected.append(sha)

    worker_processes.control()
    # Beat re-drives what the killed worker had taken but not finished (every 30 s).
    worker_processes.start("beat", ["beat"], None)

    def all_done() -> bool:
        return set(statuses(database).values()) <= {"processed", "ignored"}

    wait_until(
        all_done,
        f"every delivery processed (now {statuses(database)})",
        timeout=DEADLINE,
        diagnostics=worker_processes.logs,
    )
    assert builds_by_commit(database) == {sha: 1 for sha in expected}
    assert len(statuses(database)) == len(expected) + 1  # and the installation's


def test_a_delivery_posted_again_while_the_relay_runs_makes_one_build(
    client: FlaskClient, database: Database, tracked: GitHubServer, worker_processes: Workers
) -> None:
    worker_processes.control()
    sha, body = new_push(tracked, 1)
    guid = str(uuid.uuid4())
    for _ in range(3):
        response = client.post(
            "/webhooks/github", data=body, headers=webhook_headers("push", body, guid=guid)
        )
        assert response.status_code in (200, 202)
    wait_until(
        lambda: set(statuses(database).values()) <= {"processed", "ignored"},
        "the delivery to be processed",
        timeout=DEADLINE,
        diagnostics=worker_processes.logs,
    )
    assert builds_by_commit(database) == {sha: 1}
