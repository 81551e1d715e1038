"""Redis down while deliveries arrive: all answered 202, all processed once it is back;
an effect written to the outbox while it is down is sent once it is back, once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from controlplane.db import Database
from controlplane.models import WebhookDelivery
from controlplane.services import effects
from controlplane.settings import Settings
from tests.controlplane.test_agent_api import auth, deploy, host_token  # noqa: F401
from tests.controlplane.test_notifications import Receiver, _report, _service_id, receiver  # noqa: F401
from tests.fixtures.processes import Workers
from tests.fixtures.servers import RedisServer
from tests.fixtures.stack import wait_for
from tests.helpers import load_payload, webhook_headers

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(private_redis: RedisServer) -> str:
    """Everything in this module talks to the private Redis, not the machine's."""
    return private_redis.url


def test_deliveries_survive_a_redis_outage(
    client: FlaskClient,
    database: Database,
    settings: Settings,
    private_redis: RedisServer,
    worker_processes: Workers,
) -> None:
    body = load_payload("push__with-new-branch.payload.json")
    private_redis.stop()
    guids = []
    for _ in range(5):
        headers = webhook_headers("push", body)
        response = client.post("/webhooks/github", data=body, headers=headers)
        assert response.status_code == 202
        guids.append(headers["X-GitHub-Delivery"])
    with database.session_scope() as session:
        statuses = set(session.scalars(select(WebhookDelivery.status)))
    assert statuses == {"received"}

    private_redis.start()
    worker_processes.control()

    def all_done() -> bool:
        with database.session_scope() as session:
            return set(session.scalars(select(WebhookDelivery.status))) == {"ignored"}

    # The push targets a repository no service tracks: each delivery ends "ignored",
    # processed exactly once.
    wait_for(all_done, 90, 0.5, "the re-driven deliveries")
    with database.session_scope() as session:
        rows = list(session.scalars(select(WebhookDelivery)))
        assert sorted(r.guid for r in rows) == sorted(guids)
        assert all(r.attempts == 1 for r in rows)
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 5


def test_a_notification_written_while_redis_is_down_is_sent_once_it_is_back(
    client: FlaskClient,
    database: Database,
    private_redis: RedisServer,
    worker_processes: Workers,
    host_token: str,  # noqa: F811
    admin_headers: dict[str, str],
    receiver: tuple[Receiver, str],  # noqa: F811
) -> None:
    app, base = receiver
    url = f"/v1/services/{_service_id(database)}/notifications"
    client.post(url, json={"kind": "webhook", "url": f"{base}/hook"}, headers=admin_headers)
    deployment_id = deploy(database, "e" * 40)
    worker_processes.control()
    private_redis.stop()

    # The agent reports the deploy while the broker is down: the report is taken, and
    # its notification waits in the outbox (the relay's sends fail meanwhile).
    report = _report(deployment_id)
    assert client.post("/v1/agent/status", json=report, headers=auth(host_token)).status_code == 204

    def waiting() -> list[list[object]]:
        with database.session_scope() as session:
            return [m.args for m in effects.pending(session, effects.Kind.NOTIFICATION)]

    assert waiting() == [["deployment_active", deployment_id]]
    time.sleep(3)  # the relay tried (and failed) meanwhile: nothing sent, nothing lost
    assert app.to("/hook") == [] and waiting() == [["deployment_active", deployment_id]]

    private_redis.start()
    wait_for(lambda: app.to("/hook"), 90, 0.5, "the notification, once Redis is back")
    wait_for(lambda: waiting() == [], 30, 0.5, "the outbox to empty")
    time.sleep(3)  # a second send would arrive now
    (sent,) = app.to("/hook")
    assert sent.json()["event"] == "deploy.succeeded"
    assert sent.json()["deployment"]["id"] == deployment_id
