"""Long polls share one Redis subscription per web process and miss no change."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask

from controlplane.api.longpoll import WakeHub
from controlplane.db import Database
from controlplane.services import generations, hosts
from controlplane.settings import Settings

WAITING = 60  # long polls held at once in the test
QUOTE = '"'


@pytest.fixture
def fleet(database: Database) -> list[tuple[int, str]]:
    """Hosts and their agents' tokens."""
    made = []
    with database.session_scope() as session:
        for number in range(3):
            host, token = hosts.create_host(session, f"poll-{number}", "test")
            session.flush()
            made.append((host.id, token))
    return made


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


def current_etag(app: Flask, token: str) -> str:
    response = app.test_client().get("/v1/agent/desired-state", headers=auth(token))
    assert response.status_code == 200
    return str(response.headers["ETag"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Poll(threading.Thread):
    """One agent's held request, answered into ``status``/``etag``."""

    def __init__(self, app: Flask, token: str, etag: str, wait: int) -> None:
        super().__init__(daemon=True)
        self.app, self.token, self.etag, self.wait = app, token, etag, wait
        self.status: int | None = None
        self.answer_etag: str | None = None

    def run(self) -> None:
        response = self.app.test_client().get(
            f"/v1/agent/desired-state?wait={self.wait}",
            headers={**auth(self.token), "If-None-Match": self.etag},
        )
        self.status, self.answer_etag = response.status_code, response.headers.get("ETag")


def bump(database: Database, host_id: int) -> None:
    """A change of what the host runs, committed and announced as the services do it."""
    with database.session_scope() as session:
        generations.bump(session, host_id)


def waiting_polls(hub: WakeHub, host_id: int) -> int:
    return len(hub._waiters.get(host_id, ()))


def hub_connections(redis_client: redis.Redis) -> list[dict[str, str]]:
    """This process's wake-hub connections (named after the process)."""
    name = f"portside-wake-hub-{os.getpid()}"
    return [client for client in redis_client.client_list() if client["name"] == name]


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_many_waiting_polls_hold_no_redis_connection_and_wake_only_their_host(
    app: Flask, database: Database, fleet: list[tuple[int, str]], redis_client: redis.Redis
) -> None:
    hub: WakeHub = app.extensions["portside.wake_hub"]
    (first_id, first_token), (second_id, second_token), _third = fleet
    first_etag, second_etag = current_etag(app, first_token), current_etag(app, second_token)
    first_polls = [Poll(app, first_token, first_etag, 60) for _ in range(WAITING // 2)]
    second_polls = [Poll(app, second_token, second_etag, 60) for _ in range(WAITING // 2)]
    try:
        for poll in (*first_polls, *second_polls):
            poll.start()
        wait_until(lambda: waiting_polls(hub, first_id) + waiting_polls(hub, second_id) == WAITING)
        # The hub's one subscription, not a subscribed connection per waiting request.
        assert [client["psub"] for client in hub_connections(redis_client)] == ["1"]
        channels = [generations.wake_channel(first_id), generations.wake_channel(second_id)]
        assert redis_client.pubsub_numsub(*channels) == [(name.encode(), 0) for name in channels]
        bump(database, first_id)
        for poll in first_polls:
            poll.join(10)
        next_etag = f'"{int(first_etag.strip(QUOTE)) + 1}"'
        assert {(poll.status, poll.answer_etag) for poll in first_polls} == {(200, next_etag)}
        time.sleep(0.2)
        assert all(poll.is_alive() for poll in second_polls)  # the other host's wait on
    finally:
        bump(database, second_id)
        for poll in second_polls:
            poll.join(10)
    assert {poll.status for poll in second_polls} == {200}


def test_nothing_changes_answers_304_when_the_wait_ends(
    app: Flask, fleet: list[tuple[int, str]]
) -> None:
    _host_id, token = fleet[0]
    etag = current_etag(app, token)
    poll = Poll(app, token, etag, 1)
    poll.run()
    assert (poll.status, poll.answer_etag) == (304, etag)


def test_a_change_announced_while_the_subscription_is_down_is_not_missed(
    app: Flask, database: Database, fleet: list[tuple[int, str]], redis_client: redis.Redis
) -> None:
    hub: WakeHub = app.extensions["portside.wake_hub"]
    host_id, token = fleet[0]
    etag = current_etag(app, token)
    poll = Poll(app, token, etag, 30)
    poll.start()
    wait_until(lambda: waiting_polls(hub, host_id) == 1)
    # Cut the hub's subscription, then announce while it reconnects: the message is lost,
    # the cached generation is not, and the waiting request reads it once resubscribed.
    (subscription,) = hub_connections(redis_client)
    redis_client.client_kill_filter(_id=subscription["id"])
    bump(database, host_id)
    poll.join(10)
    assert not poll.is_alive()
    assert poll.status == 200


def test_without_a_subscription_a_long_poll_is_answered_instead_of_held() -> None:
    hub = WakeHub("redis://127.0.0.1:1/0")  # nobody listens there
    answers: list[int] = []
    waiter = threading.Thread(target=lambda: answers.append(hub.wait(1, 3, 3600, lambda: 3)))
    try:
        waiter.start()
        waiter.join(30)
        assert answers == [3]  # answered "unchanged" at once, not after an hour
    finally:
        hub.close()


def test_a_wake_up_without_a_change_keeps_the_poll_waiting(
    app: Flask, database: Database, fleet: list[tuple[int, str]], redis_client: redis.Redis
) -> None:
    """Channels are shared by every Redis database: another Portside's message for a host
    with the same id must not answer this one's agent."""
    hub: WakeHub = app.extensions["portside.wake_hub"]
    host_id, token = fleet[0]
    etag = current_etag(app, token)
    poll = Poll(app, token, etag, 30)
    poll.start()
    wait_until(lambda: waiting_polls(hub, host_id) == 1)
    redis_client.publish(generations.wake_channel(host_id), 999)
    poll.join(0.5)
    assert poll.is_alive()
    bump(database, host_id)
    poll.join(10)
    assert (poll.status, poll.answer_etag) == (200, f'"{int(etag.strip(QUOTE)) + 1}"')


def unshared_host_id() -> int:
    """A host id no other test on this Redis server announces (channels are shared by
    every database, and a foreign announcement rightly drops a cached generation)."""
    return 10**12 + secrets.randbelow(10**9)


def subscribed_hub(redis_url: str) -> WakeHub:
    """A hub of this test's own, listening."""
    hub = WakeHub(redis_url)
    hub.generation(0, lambda: 0)  # starts the listener
    wait_until(hub._subscribed.is_set)
    return hub


def test_a_generation_is_answered_from_the_process_cache_until_announced(
    settings: Settings, redis_client: redis.Redis
) -> None:
    hub = subscribed_hub(settings.redis_url)
    host_id = unshared_host_id()
    try:
        assert hub.generation(host_id, lambda: 1) == 1
        assert hub.generation(host_id, lambda: 2) == 1  # not read again
        heard = hub._announcements
        redis_client.publish(generations.wake_channel(host_id), 2)
        wait_until(lambda: hub._announcements > heard)
        assert hub.generation(host_id, lambda: 2) == 2  # dropped: read again
    finally:
        hub.close()


def test_a_read_overtaken_by_an_announcement_is_not_kept(
    settings: Settings, redis_client: redis.Redis
) -> None:
    hub = subscribed_hub(settings.redis_url)
    host_id = unshared_host_id()
    try:
        heard = hub._announcements

        def stale_read() -> int:
            redis_client.publish(generations.wake_channel(host_id), 2)  # announced meanwhile
            wait_until(lambda: hub._announcements > heard)
            return 1

        assert hub.generation(host_id, stale_read) == 1
        assert hub.generation(host_id, lambda: 2) == 2  # read again, not the stale 1
        assert hub.generation(host_id, lambda: 3) == 2  # now kept
    finally:
        hub.close()


def test_the_cache_is_forgotten_when_the_subscription_is_lost(
    settings: Settings, redis_client: redis.Redis
) -> None:
    hub = subscribed_hub(settings.redis_url)
    host_id = unshared_host_id()
    try:
        assert hub.generation(host_id, lambda: 1) == 1
        assert hub.generation(host_id, lambda: 2) == 1
        (subscription,) = hub_connections(redis_client)
        redis_client.client_kill_filter(_id=subscription["id"])
        wait_until(lambda: not hub._subscribed.is_set())
        # Announcements may have been missed: the entry is gone, the source is read.
        assert hub.generation(host_id, lambda: 2) == 2
    finally:
        hub.close()


def test_a_fleet_wide_bump_moves_and_announces_every_host_once(
    app: Flask, database: Database, fleet: list[tuple[int, str]], redis_client: redis.Redis
) -> None:
    etags = {host_id: current_etag(app, token) for host_id, token in fleet}
    with database.session_scope() as session:
        generations.bump_hosts(session, [host_id for host_id, _token in fleet])
    for host_id, token in fleet:
        moved = f'"{int(etags[host_id].strip(QUOTE)) + 1}"'
        assert current_etag(app, token) == moved
        assert redis_client.get(generations.generation_key(host_id)) == moved.strip(QUOTE).encode()


def test_the_process_that_announces_forgets_at_once_without_its_message(
    settings: Settings, database: Database, fleet: list[tuple[int, str]]
) -> None:
    hub = WakeHub(settings.redis_url)
    # As if subscribed, but deaf: no message can drop the entry, only the local path.
    hub._listener_pid = os.getpid()
    hub._subscribed.set()
    host_id = fleet[0][0]
    try:
        assert hub.generation(host_id, lambda: 1) == 1
        assert hub.generation(host_id, lambda: 2) == 1
        bump(database, host_id)  # committed and announced here: no waiting for Redis
        assert hub.generation(host_id, lambda: 42) == 42
    finally:
        hub.close()
