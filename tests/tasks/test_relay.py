"""The delivery relay against a real Redis: order, failures and a relay's restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tasks.pipeline import INCOMING_DELIVERIES, announce_delivery
from tasks.relay import DeliveryRelay, relaying_list

NODE = "control@test"


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


class Recorder:
    """A ``send`` that records ids and can be told to fail like a broker that went away."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.failing = False

    def __call__(self, delivery_id: int) -> None:
        if self.failing:
            raise ConnectionError("broker unreachable")
        self.sent.append(delivery_id)


def drain(relay: DeliveryRelay) -> None:
    while relay.relay_once():
        pass


def test_ids_are_sent_oldest_first_and_leave_nothing_behind(broker: redis.Redis) -> None:
    recorder = Recorder()
    relay = DeliveryRelay(broker, recorder, NODE)
    for delivery_id in (7, 8, 9):
        announce_delivery(broker, delivery_id)

    drain(relay)

    assert recorder.sent == [7, 8, 9]
    assert broker.llen(INCOMING_DELIVERIES) == 0
    assert broker.llen(relaying_list(NODE)) == 0


def test_an_id_that_could_not_be_sent_goes_back_to_the_head(broker: redis.Redis) -> None:
    recorder = Recorder()
    relay = DeliveryRelay(broker, recorder, NODE)
    announce_delivery(broker, 1)
    announce_delivery(broker, 2)
    recorder.failing = True

    with pytest.raises(ConnectionError):
        relay.relay_once()

    assert broker.lrange(INCOMING_DELIVERIES, 0, -1) == [b"2", b"1"]
    recorder.failing = False
    drain(relay)
    assert recorder.sent == [1, 2]


def test_a_restarted_relay_sends_what_its_killed_run_had_taken_first(
    broker: redis.Redis,
) -> None:
    announce_delivery(broker, 1)
    announce_delivery(broker, 2)
    # The killed run had moved id 1 to its own list and died before sending it.
    broker.lmove(INCOMING_DELIVERIES, relaying_list(NODE), "RIGHT", "LEFT")
    recorder = Recorder()
    relay = DeliveryRelay(broker, recorder, NODE)

    assert relay.give_back() == 1
    drain(relay)

    assert recorder.sent == [1, 2]
    assert broker.llen(relaying_list(NODE)) == 0


def test_another_nodes_taken_ids_are_left_to_it(broker: redis.Redis) -> None:
    broker.lpush(relaying_list("control@other"), 5)
    relay = DeliveryRelay(broker, Recorder(), NODE)

    assert relay.give_back() == 0
    assert broker.lrange(relaying_list("control@other"), 0, -1) == [b"5"]


def test_garbage_in_the_list_is_dropped_not_retried_forever(broker: redis.Redis) -> None:
    recorder = Recorder()
    relay = DeliveryRelay(broker, recorder, NODE)
    broker.lpush(INCOMING_DELIVERIES, "not-an-id")
    announce_delivery(broker, 3)

    drain(relay)

    assert recorder.sent == [3]
    assert broker.llen(relaying_list(NODE)) == 0


def test_the_thread_relays_until_stopped(broker: redis.Redis) -> None:
    recorder = Recorder()
    relay = DeliveryRelay(broker, recorder, NODE)
    relay.start()
    try:
        announce_delivery(broker, 11)
        announce_delivery(broker, 12)
        for _ in range(100):
            if len(recorder.sent) == 2:
                break
            relay.stopping.wait(0.05)
    finally:
        relay.stop()
    assert recorder.sent == [11, 12]
    assert relay._thread is not None and not relay._thread.is_alive()
