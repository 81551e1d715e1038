"""Redis down while deliveries arrive: all answered 202, all processed once it is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from controlplane.db import Database
from controlplane.models import WebhookDelivery
from controlplane.settings import Settings
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
