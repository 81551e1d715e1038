"""The outbox relay against the real database: order, failures, sharing and wake-ups."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from controlplane.db import Database
from controlplane.github.webhooks import parse
from controlplane.models import WebhookDelivery
from controlplane.services import deliveries
from tasks.relay import DeliveryRelay
from tests.fixtures.processes import wait_until
from tests.helpers import load_payload, webhook_headers

BODY = load_payload("push__payload.json")


class Recorder:
    """A ``send`` that records ids and can be told to fail like a broker that went away."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.failing = False

    def __call__(self, delivery_id: int) -> None:
        if self.failing:
            raise ConnectionError("broker unreachable")
        self.sent.append(delivery_id)


def receive(database: Database) -> int:
    """A delivery committed by the webhook receiver's own code path."""
    guid = str(uuid.uuid4())
    delivery = parse(dict(webhook_headers("push", BODY, guid=guid)), BODY)
    recorded = deliveries.intake(database, delivery, BODY)
    assert (recorded.status, recorded.kind) == ("received", "new")
    return recorded.delivery_id


def statuses(database: Database) -> dict[int, str]:
    with database.session_scope() as session:
        rows = session.execute(select(WebhookDelivery.id, WebhookDelivery.status))
        return {row.id: row.status for row in rows}


def test_received_deliveries_are_sent_oldest_first_and_marked_enqueued(
    database: Database,
) -> None:
    ids = [receive(database) for _ in range(3)]
    recorder = Recorder()

    assert DeliveryRelay(database, recorder).relay_once() == 3

    assert recorder.sent == ids
    assert statuses(database) == dict.fromkeys(ids, "enqueued")
    assert DeliveryRelay(database, recorder).relay_once() == 0
    assert recorder.sent == ids


def test_a_failed_send_leaves_the_batch_received_for_the_next_round(
    database: Database,
) -> None:
    ids = [receive(database) for _ in range(2)]
    recorder = Recorder()
    recorder.failing = True
    relay = DeliveryRelay(database, recorder)

    with pytest.raises(ConnectionError):
        relay.relay_once()

    assert statuses(database) == dict.fromkeys(ids, "received")
    recorder.failing = False
    assert relay.relay_once() == 2
    assert recorder.sent == ids


def test_two_relays_never_send_the_same_row(database: Database) -> None:
    first_id = receive(database)
    # The first relay holds its batch (its transaction is open) when the second looks.
    with database.session_scope() as holding:
        assert deliveries.claim_received(holding, 100) == [first_id]
        second_id = receive(database)
        other = Recorder()
        assert DeliveryRelay(database, other).relay_once() == 1
        assert other.sent == [second_id]
        deliveries.mark_sent(holding, [first_id])
    assert statuses(database) == {first_id: "enqueued", second_id: "enqueued"}


def test_a_redelivered_failed_delivery_goes_back_to_the_outbox(database: Database) -> None:
    delivery_id = receive(database)
    with database.session_scope() as session:
        deliveries.mark_failed(session, delivery_id, "boom")
    guid = statuses_guid(database, delivery_id)
    again = parse(dict(webhook_headers("push", BODY, guid=guid)), BODY)

    recorded = deliveries.intake(database, again, BODY)

    assert (recorded.delivery_id, recorded.status, recorded.kind) == (
        delivery_id,
        "received",
        "retry",
    )
    recorder = Recorder()
    assert DeliveryRelay(database, recorder).relay_once() == 1
    assert recorder.sent == [delivery_id]


def statuses_guid(database: Database, delivery_id: int) -> str:
    with database.session_scope() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        return row.guid


def test_the_thread_is_woken_by_the_commit_and_stops_on_request(database: Database) -> None:
    recorder = Recorder()
    relay = DeliveryRelay(database, recorder)
    relay.start()
    try:
        ids = [receive(database) for _ in range(2)]
        wait_until(lambda: recorder.sent == ids, f"the relay to send {ids}", timeout=30)
    finally:
        relay.stop()
    assert relay._thread is not None and not relay._thread.is_alive()
    assert statuses(database) == dict.fromkeys(ids, "enqueued")
