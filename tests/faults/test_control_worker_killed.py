"""Deliveries lost between the commit and the enqueue are re-driven: none lost, none twice.

Three ways a committed delivery misses its message, each set up for real: the web process
died right after the commit (its id was never announced); the delivery arrived while no
control worker ran (its id waits in Redis); a control worker's relay took the id and was
SIGKILLed before sending it. Then a control worker is SIGKILLed while a stream of
deliveries arrives. After a restart, every pushed commit has exactly one build.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import uuid

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.github.webhooks import parse
from controlplane.models import Build, WebhookDelivery
from controlplane.services import deliveries, hosts, services
from controlplane.settings import Settings
from tasks.pipeline import INCOMING_DELIVERIES
from tasks.relay import relaying_list
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
    redis_url: str,
) -> GitHubServer:
    """The App installed on Hello-World and a service tracking its master branch."""
    github_server.state.add_installation(957387, OWNER)
    github_server.state.add_repository(957387, REPOSITORY, default_branch="master")
    github_server.state.commit(REPOSITORY, {"Dockerfile": "FROM scratch\n"}, branch="master")
    github_server.state.add_repository(957387, f"{OWNER}/plain")
    github_server.state.commit(f"{OWNER}/plain", {"Dockerfile": "FROM scratch\n"})
    app = GitHubApp(github_app_key.app_id, github_app_key.private_key_pem, github_server.url)
    install(client, database, github_server, app)
    # The installation delivery was processed right here: its announced id is spent.
    broker = redis.Redis.from_url(redis_url)
    broker.delete(INCOMING_DELIVERIES)
    broker.close()
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        spec = services.ServiceSpec(
            name="hello", repository=REPOSITORY, branch="master", host="web-1"
        )
        services.create_service(session, spec, "test")
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


def unfinished_deliveries(database: Database) -> list[tuple[int, str]]:
    with database.session_scope() as session:
        rows = session.execute(
            select(WebhookDelivery.id, WebhookDelivery.status).where(
                WebhookDelivery.status.not_in(deliveries.DONE)
            )
        )
        return [(row.id, row.status) for row in rows]


def test_deliveries_lost_between_commit_and_enqueue_are_built_exactly_once(
    client: FlaskClient,
    database: Database,
    tracked: GitHubServer,
    worker_processes: Workers,
    redis_url: str,
) -> None:
    broker = redis.Redis.from_url(redis_url)
    expected: list[str] = []

    # 1. The web process died between the commit and the announce.
    sha, body = new_push(tracked, 1)
    delivery = parse(dict(webhook_headers("push", body)), body)
    died = deliveries.intake(database, delivery, body, lambda _delivery_id: None)
    assert died.status == "enqueued"
    assert broker.llen(INCOMING_DELIVERIES) == 0
    expected.append(sha)

    # 2. Committed and announced while no control worker ran: its id waits in Redis.
    sha, body = new_push(tracked, 2)
    waiting = post(client, "push", json.loads(body))
    assert broker.lrange(INCOMING_DELIVERIES, 0, -1) == [str(waiting).encode()]
    expected.append(sha)

    # 3. A relay took an id into its own list and was killed before sending it.
    sha, body = new_push(tracked, 3)
    taken = post(client, "push", json.loads(body))
    node = f"control@{socket.gethostname()}"
    assert broker.lmove(INCOMING_DELIVERIES, relaying_list(node), "LEFT", "LEFT") == (
        str(taken).encode()
    )
    expected.append(sha)

    # 4. A control worker SIGKILLed while deliveries stream in (killed mid-flight).
    first = worker_processes.control()
    assert first.node == node
    for number in range(4, 14):
        sha, body = new_push(tracked, number)
        post(client, "push", json.loads(body))
        expected.append(sha)
    first.kill()
    for number in range(14, 18):  # arriving while no control worker runs
        sha, body = new_push(tracked, number)
        post(client, "push", json.loads(body))
        expected.append(sha)

    worker_processes.control()

    def all_done() -> bool:
        return not unfinished_deliveries(database)

    wait_until(
        all_done,
        f"every delivery processed (unfinished: {unfinished_deliveries(database)})",
        timeout=DEADLINE,
        diagnostics=worker_processes.logs,
    )
    assert builds_by_commit(database) == {sha: 1 for sha in expected}
    assert broker.llen(INCOMING_DELIVERIES) == 0
    assert broker.llen(relaying_list(node)) == 0
    with database.session_scope() as session:
        statuses = set(session.scalars(select(WebhookDelivery.status)))
    assert statuses <= {"processed", "ignored"}
    broker.close()


def test_a_delivery_id_is_relayed_once_with_its_guid(
    client: FlaskClient, database: Database, tracked: GitHubServer, worker_processes: Workers
) -> None:
    """The same delivery posted again while the relay runs still makes one build."""
    worker_processes.control()
    sha, body = new_push(tracked, 1)
    guid = str(uuid.uuid4())
    for _ in range(3):
        response = client.post(
            "/webhooks/github", data=body, headers=webhook_headers("push", body, guid=guid)
        )
        assert response.status_code in (200, 202)
    wait_until(
        lambda: not unfinished_deliveries(database),
        "the delivery to be processed",
        timeout=DEADLINE,
        diagnostics=worker_processes.logs,
    )
    assert builds_by_commit(database) == {sha: 1}
