"""The web app, a control worker and a build worker exchange real tasks through real Redis.

No eager mode: the workers are ``portside worker`` / ``portside buildworker`` processes
started with the test's settings (tests.fixtures.processes).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
import redis
from celery import Celery
from flask.testing import FlaskClient

from controlplane.db import Database
from controlplane.models import WebhookDelivery, utcnow
from tasks.app import CONTROL_QUEUE
from tests.fixtures.processes import WorkerProcess, Workers, wait_until
from tests.helpers import json_payload, load_payload, webhook_headers

pytestmark = pytest.mark.slow

FINAL_STATUSES = ("processed", "ignored")
DEADLINE = 60.0


def delivery_status(database: Database, delivery_id: int) -> str | None:
    with database.session_scope() as session:
        row = session.get(WebhookDelivery, delivery_id)
        return row.status if row is not None else None


def wait_for_final_status(database: Database, delivery_id: int, workers: Workers) -> str:
    def final() -> str | None:
        status = delivery_status(database, delivery_id)
        return status if status in FINAL_STATUSES else None

    return wait_until(
        final,
        f"delivery {delivery_id} to be processed (now {delivery_status(database, delivery_id)})",
        timeout=DEADLINE,
        diagnostics=workers.logs,
    )


def test_a_signed_push_is_processed_by_the_control_worker(
    client: FlaskClient,
    database: Database,
    worker_processes: Workers,
    control_worker: WorkerProcess,
    build_worker: WorkerProcess,
) -> None:
    body = load_payload("push__payload.json")

    response = client.post("/webhooks/github", data=body, headers=webhook_headers("push", body))

    assert response.status_code == 202, response.get_data(as_text=True)
    delivery_id = response.get_json()["id"]
    status = wait_for_final_status(database, delivery_id, worker_processes)
    with database.session_scope() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        assert row.status == status
        assert row.event == "push"
        assert row.attempts >= 1
        assert row.processed_at is not None
        assert row.outcome


def test_a_build_worker_answers_worker_info_by_name(
    celery_client: Celery, build_worker: WorkerProcess
) -> None:
    result = celery_client.send_task("portside.worker_info", queue="builds")

    info = result.get(timeout=DEADLINE)

    assert info["node"] == build_worker.node
    assert info["node"].startswith("build-test@")
    assert info["python"]


def test_the_control_worker_redrives_deliveries_when_it_starts(
    database: Database, worker_processes: Workers, redis_url: str
) -> None:
    # Committed while no worker ran, and never enqueued (the broker was down, say).
    payload = json_payload("push__payload.json")
    with database.session_scope() as session:
        row = WebhookDelivery(
            guid=str(uuid.uuid4()),
            event="push",
            body=json.dumps(payload),
            repository_id=payload["repository"]["id"],
            repository_full_name=payload["repository"]["full_name"],
            status="received",
            received_at=utcnow() - dt.timedelta(minutes=2),
        )
        session.add(row)
        session.flush()
        delivery_id = row.id
    broker = redis.Redis.from_url(redis_url)
    try:
        assert broker.llen(CONTROL_QUEUE) == 0
    finally:
        broker.close()
    assert delivery_status(database, delivery_id) == "received"

    worker_processes.control()

    assert wait_for_final_status(database, delivery_id, worker_processes) in FINAL_STATUSES
