"""The notifier that wakes listeners after a commit, from a thread of its own."""

from __future__ import annotations

import select
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

from controlplane.db import Database, Notifier
from controlplane.github.webhooks import parse
from controlplane.services import deliveries
from tests.fixtures.processes import wait_until
from tests.helpers import load_payload, webhook_headers

BODY = load_payload("push__payload.json")


@pytest.fixture
def listener(database: Database) -> Iterator[Any]:
    """A plain psycopg2 connection listening on the deliveries channel."""
    url = make_url(database.engine.url)
    connection = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"LISTEN {deliveries.CHANNEL}")
    yield connection
    connection.close()


def next_notification(connection: Any, timeout: float = 10.0) -> str:
    ready, _, _ = select.select([connection], [], [], timeout)
    assert ready, "no notification came"
    connection.poll()
    return str(connection.notifies.pop(0).channel)


def test_a_received_delivery_wakes_the_relays_after_its_commit(
    database: Database, listener: Any
) -> None:
    guid = str(uuid.uuid4())
    recorded = deliveries.intake(
        database, parse(dict(webhook_headers("push", BODY, guid=guid)), BODY), BODY
    )

    assert next_notification(listener) == deliveries.CHANNEL
    # Sent after the commit: the listener's own connection already sees the row.
    with listener.cursor() as cursor:
        cursor.execute("SELECT status FROM webhook_deliveries WHERE guid = %s", (guid,))
        assert cursor.fetchone() == ("received",)
    assert recorded.kind == "new"


def test_a_burst_of_notifications_arrives_and_the_thread_stops_on_close(
    database: Database, listener: Any
) -> None:
    notifier = Notifier(database.intake_engine)
    try:
        for _ in range(200):
            notifier.notify(deliveries.CHANNEL)
        assert next_notification(listener) == deliveries.CHANNEL
    finally:
        notifier.close()
    assert notifier._thread is not None and not notifier._thread.is_alive()


def test_an_unreachable_database_neither_raises_nor_blocks_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:9/none", connect_args={"connect_timeout": 1}
    )
    attempts: list[object] = []
    event.listen(engine, "do_connect", lambda *args: attempts.append(args))
    notifier = Notifier(engine)
    notifier.RETRY_DELAY = 0.01
    try:
        notifier.notify(deliveries.CHANNEL)  # returns at once; the thread retries
        assert notifier._thread is not None and notifier._thread.is_alive()
        wait_until(lambda: len(attempts) >= 3, "three connection attempts", timeout=30)
    finally:
        notifier.close()
        engine.dispose()
    assert not notifier._thread.is_alive()
    # One warning for the outage, not one per retry.
    warnings = [r for r in caplog.records if r.name == "controlplane.db"]
    assert len(warnings) == 1 and "could not notify" in warnings[0].getMessage()
