"""Queued builds reach the shared build queue a few at a time, and fairly between
services: with PostgreSQL and Redis, the dispatcher as the control worker runs it."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.models import Build, Environment
from controlplane.services import builds, catalog, hosts, pushes, servicerules, stepclaims
from controlplane.services.dispatch import DISPATCHED_KEY, Waiting, dispatch, fair_order

LOST_AFTER = dt.timedelta(seconds=90)
WORKER = "build-1@test"


@pytest.fixture
def broker(redis_url: str, database: Database) -> redis.Redis:
    """The test's Redis; the test database has the host the services deploy to."""
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
    return redis.Redis.from_url(redis_url)


def previews(database: Database, service: str, count: int) -> list[int]:
    """``count`` queued builds of ``service``, each of a preview environment of its own."""
    made = []
    with database.session_scope() as session:
        row = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name=service, repository=f"o/{service}", branch="main", host="web-1"
            ),
            "test",
        )
        for number in range(1, count + 1):
            environment = Environment(
                service_id=row.id,
                host_id=row.environments[0].host_id,
                name=f"{service}-pr-{number}",
                kind="preview",
                branch=f"feature-{number}",
                pr_number=number,
            )
            session.add(environment)
            session.flush()
            build = pushes.start_build(
                session, row, environment, f"{number:040x}", branch=environment.branch
            )
            assert build is not None
            session.flush()
            made.append(build.id)
    return made


class Queue:
    """The shared queue as the dispatcher fills it: sends are recorded, not published."""

    def __init__(self, database: Database, broker: redis.Redis) -> None:
        self.database = database
        self.broker = broker
        self.messages: list[tuple[int, int]] = []

    def send(self, build_id: int, attempt: int) -> None:
        self.messages.append((build_id, attempt))

    def length(self) -> int:
        return len(self.messages)

    def dispatch(self) -> list[int]:
        with self.database.session_scope() as session:
            return dispatch(
                session,
                self.broker,
                self.send,
                shared_queue_length=self.length,
                lost_after=LOST_AFTER,
            )

    def take(self) -> tuple[int, int]:
        """A free worker takes the oldest message and claims the build's first step."""
        build_id, attempt = self.messages.pop(0)
        with self.database.session_scope() as session:
            stepclaims.claim_step(session, build_id, "clone", attempt, WORKER)
        return build_id, attempt


def service_of(session: Session, build_id: int) -> str:
    build = session.get(Build, build_id)
    assert build is not None
    return build.service.name


def test_services_take_turns_however_long_one_backlog_is(
    database: Database, broker: redis.Redis
) -> None:
    previews(database, "alpha", 4)  # alpha floods the queue first
    previews(database, "beta", 2)
    queue = Queue(database, broker)

    started = []
    queue.dispatch()
    while queue.messages:
        build_id, _ = queue.take()
        started.append(build_id)
        queue.dispatch()  # the claim woke the dispatcher

    with database.session_scope() as session:
        order = [service_of(session, build_id) for build_id in started]
    assert order == ["alpha", "beta", "alpha", "beta", "alpha", "alpha"]


def test_oldest_build_first_within_a_service(database: Database, broker: redis.Redis) -> None:
    made = previews(database, "alpha", 3)
    queue = Queue(database, broker)
    started = []
    queue.dispatch()
    while queue.messages:
        started.append(queue.take()[0])
        queue.dispatch()
    assert started == made


def test_no_more_builds_wait_in_the_queue_than_workers_were_seen(
    database: Database, broker: redis.Redis
) -> None:
    previews(database, "alpha", 5)
    queue = Queue(database, broker)

    assert len(queue.dispatch()) == 1  # no worker seen yet: one at a time
    assert queue.dispatch() == []  # the first is still waiting: not sent twice
    queue.take()
    assert len(queue.dispatch()) == 1  # one worker seen, busy: one waits for it
    with database.session_scope() as session:
        second = session.scalars(select(Build).where(Build.status == "queued")).first()
        assert second is not None
        second_id = second.id
    queue.messages.remove((second_id, 1))
    with database.session_scope() as session:
        stepclaims.claim_step(session, second_id, "clone", 1, "build-2@test")
    assert len(queue.dispatch()) == 2  # two workers seen, both busy


def test_a_build_whose_message_redis_lost_is_sent_again(
    database: Database, broker: redis.Redis
) -> None:
    (build_id,) = previews(database, "alpha", 1)
    queue = Queue(database, broker)
    assert queue.dispatch() == [build_id]

    broker.flushdb()  # Redis restarted empty: the message went with it
    queue.messages.clear()

    assert queue.dispatch() == [build_id]
    assert queue.messages == [(build_id, 1)]


def test_a_message_out_too_long_is_sent_again_only_once_the_queue_is_empty(
    database: Database, broker: redis.Redis
) -> None:
    (build_id,) = previews(database, "alpha", 1)
    queue = Queue(database, broker)
    queue.dispatch()
    long_ago = time.time() - LOST_AFTER.total_seconds() - 1
    broker.zadd(DISPATCHED_KEY, {f"{build_id}:1": long_ago})

    assert queue.dispatch() == []  # still in the queue, behind busy workers

    queue.messages.clear()  # a worker took it and died before claiming it
    assert queue.dispatch() == [build_id]


def test_a_taken_over_build_is_sent_again_as_its_new_attempt(
    database: Database, broker: redis.Redis
) -> None:
    (build_id,) = previews(database, "alpha", 1)
    queue = Queue(database, broker)
    queue.dispatch()
    queue.take()
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        builds.take_over(session, build)

    assert queue.dispatch() == [build_id]
    assert queue.messages == [(build_id, 2)]


def test_an_older_build_of_an_environment_waits_for_the_newer_to_cancel_it(
    database: Database, broker: redis.Redis
) -> None:
    with database.session_scope() as session:
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="o/hello", branch="main", host="web-1"
            ),
            "test",
        )
        environment = pushes.production_environment(session, service)
        older = pushes.start_build(session, service, environment, "a" * 40, branch="main")
        session.flush()
        newer = pushes.start_build(session, service, environment, "b" * 40, branch="main")
        session.flush()
        assert older is not None and newer is not None
        newer_id = newer.id

    assert Queue(database, broker).dispatch() == [newer_id]


def test_fair_order_puts_the_least_recently_served_service_first() -> None:
    waiting = [
        Waiting(1, 1, service_id=10, queued_at=1.0),
        Waiting(2, 1, service_id=10, queued_at=2.0),
        Waiting(3, 1, service_id=20, queued_at=3.0),
        Waiting(4, 1, service_id=30, queued_at=4.0),
    ]
    order = fair_order(waiting, {10: 100.0, 20: 50.0})
    # 30 never served, then 20 (served at 50), then 10 (served at 100), then 10 again.
    assert [b.build_id for b in order] == [4, 3, 1, 2]
