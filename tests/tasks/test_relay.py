"""The one relay against the real database: order, failures, sharing and wake-ups, for
deliveries and for outbox rows."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import select

from controlplane.db import Database
from controlplane.github.webhooks import parse
from controlplane.models import WebhookDelivery
from controlplane.services import deliveries, effects
from tasks.relay import Relay, Senders
from tests.fixtures.processes import wait_until
from tests.helpers import load_payload, webhook_headers

BODY = load_payload("push__payload.json")


class Recorder:
    """A ``send`` that records ids and can be told to fail like a broker that went away."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.effects: list[tuple[str, list[Any]]] = []
        self.failing = False
        self.effects_before_failing: int | None = None

    def __call__(self, delivery_id: int) -> None:
        if self.failing:
            raise ConnectionError("broker unreachable")
        self.sent.append(delivery_id)

    def effect(self, kind: str, args: list[Any]) -> None:
        if self.failing or len(self.effects) == self.effects_before_failing:
            raise ConnectionError("broker unreachable")
        self.effects.append((kind, args))


def recording_relay(database: Database, recorder: Recorder, redis_url: str) -> Relay:
    """A relay whose senders record (builds: none are queued here)."""
    senders = Senders(
        delivery=recorder,
        effect=recorder.effect,
        build=lambda build_id, attempt, **_: None,
        shared_queue_length=lambda **_: 0,
    )
    return Relay(database, redis.Redis.from_url(redis_url), senders, dt.timedelta(seconds=90))


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
    database: Database, redis_url: str
) -> None:
    ids = [receive(database) for _ in range(3)]
    recorder = Recorder()

    assert recording_relay(database, recorder, redis_url).relay_deliveries() == 3

    assert recorder.sent == ids
    assert statuses(database) == dict.fromkeys(ids, "enqueued")
    assert recording_relay(database, recorder, redis_url).relay_deliveries() == 0
    assert recorder.sent == ids


def test_a_failed_send_leaves_the_batch_received_for_the_next_round(
    database: Database, redis_url: str
) -> None:
    ids = [receive(database) for _ in range(2)]
    recorder = Recorder()
    recorder.failing = True
    relay = recording_relay(database, recorder, redis_url)

    with pytest.raises(ConnectionError):
        relay.relay_deliveries()

    assert statuses(database) == dict.fromkeys(ids, "received")
    recorder.failing = False
    assert relay.relay_deliveries() == 2
    assert recorder.sent == ids


def test_two_relays_never_send_the_same_row(database: Database, redis_url: str) -> None:
    first_id = receive(database)
    # The first relay holds its batch (its transaction is open) when the second looks.
    with database.session_scope() as holding:
        assert deliveries.claim_received(holding, 100) == [first_id]
        second_id = receive(database)
        other = Recorder()
        assert recording_relay(database, other, redis_url).relay_deliveries() == 1
        assert other.sent == [second_id]
        deliveries.mark_sent(holding, [first_id])
    assert statuses(database) == {first_id: "enqueued", second_id: "enqueued"}


def test_a_redelivered_failed_delivery_goes_back_to_the_outbox(
    database: Database, redis_url: str
) -> None:
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
    assert recording_relay(database, recorder, redis_url).relay_deliveries() == 1
    assert recorder.sent == [delivery_id]


def statuses_guid(database: Database, delivery_id: int) -> str:
    with database.session_scope() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        return row.guid


def test_the_thread_is_woken_by_the_commit_and_stops_on_request(
    database: Database, redis_url: str
) -> None:
    recorder = Recorder()
    relay = recording_relay(database, recorder, redis_url)
    relay.start()
    try:
        ids = [receive(database) for _ in range(2)]
        wait_until(lambda: recorder.sent == ids, f"the relay to send {ids}", timeout=30)
    finally:
        relay.stop()
    assert relay._thread is not None and not relay._thread.is_alive()
    assert statuses(database) == dict.fromkeys(ids, "enqueued")


def test_outbox_rows_are_sent_in_order_once_and_only_when_committed(
    database: Database, redis_url: str
) -> None:
    with database.session_scope() as session:
        effects.note_feedback(session, "build_queued", 7)
        effects.note_notification(session, "deployment_active", 3)
    with pytest.raises(RuntimeError), database.session_scope() as session:
        effects.note_feedback(session, "build_failed", 8)
        raise RuntimeError("the change that caused it is rolled back")
    recorder = Recorder()
    recorder.failing = True
    relay = recording_relay(database, recorder, redis_url)

    with pytest.raises(ConnectionError):
        relay.relay_effects()
    recorder.failing = False
    recorder.effects_before_failing = 1  # the broker goes away after the first send
    with pytest.raises(ConnectionError):
        relay.relay_effects()
    recorder.effects_before_failing = None
    assert relay.relay_effects() == 1  # only the row not sent yet
    assert relay.relay_effects() == 0

    assert recorder.effects == [
        ("feedback", ["build_queued", 7]),
        ("notification", ["deployment_active", 3]),
    ]
