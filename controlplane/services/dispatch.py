"""Fair dispatch: queued builds go to the shared queues a few at a time, fairly.

A queued build waits in the database. Only about as many builds as there are build
workers wait in the shared ``builds`` queue (where a free worker takes the oldest
message), so which build runs next is chosen here, each time a place in that queue
frees, not by the order of arrival: services take turns, the one served least recently
first, and within a service the oldest build first. One service's backlog of fifty
then delays another's two by a build each, not by fifty.

A fork's builds (``Build.untrusted``) are a lane of their own: their own shared queue
(``builds-untrusted``), read only by workers told to take them, counted against the
workers that ran such builds lately.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis import Redis
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from contracts.statuses import BuildStatus
from controlplane.models import Build, utcnow
from controlplane.services import ancestry, effects, gates

log = logging.getLogger(__name__)

# Builds whose first step is in the shared queue and not yet claimed, by "id:attempt".
DISPATCHED_KEY = "portside:builds:dispatched"
UNTRUSTED_DISPATCHED_KEY = "portside:builds:dispatched:untrusted"
DISPATCH_LOCK = 7_370_250_300_001  # pg_advisory_xact_lock key: one dispatcher at a time
# A worker that heartbeated a build this recently counts as one that takes builds.
WORKERS_SEEN_WITHIN = dt.timedelta(minutes=10)
# A queued build's waiting_reason when no worker of its lane was seen within that.
NO_WORKER = "no build worker online"
NO_UNTRUSTED_WORKER = "no build worker for forks' builds online"


class Send(Protocol):
    """Sends a build attempt's chain: a trusted build as ``send(id, attempt)``, a fork's
    with ``untrusted=True`` (to the untrusted queue)."""

    def __call__(self, build_id: int, attempt: int, *, untrusted: bool = ...) -> None: ...


class QueueLength(Protocol):
    """Messages waiting in the shared queue of trusted builds, or with ``untrusted=True``
    in that of forks' builds."""

    def __call__(self, *, untrusted: bool = ...) -> int: ...


def wake_dispatchers(session: Session) -> None:
    """Have the dispatchers look again once this transaction commits (the relay's
    channel: PostgreSQL delivers a NOTIFY with the commit and drops it on rollback)."""
    effects.wake_relay(session)


@dataclass(frozen=True, slots=True)
class Waiting:
    """A queued build as the dispatcher sees it."""

    build_id: int
    attempt: int
    service_id: int
    queued_at: float  # seconds since the epoch
    untrusted: bool = False

    @property
    def member(self) -> str:
        """Its entry among the dispatched: a new attempt is a new entry."""
        return f"{self.build_id}:{self.attempt}"


def fair_order(waiting: Iterable[Waiting], last_served: Mapping[int, float]) -> list[Waiting]:
    """The order builds should start in: services take turns, the one served least
    recently (never: first) leading; within a service the oldest build first."""
    lines: dict[int, deque[Waiting]] = {}
    for build in sorted(waiting, key=lambda b: (b.queued_at, b.build_id)):
        lines.setdefault(build.service_id, deque()).append(build)
    turns = deque(
        sorted(lines, key=lambda s: (last_served.get(s, -math.inf), lines[s][0].queued_at, s))
    )
    order: list[Waiting] = []
    while turns:
        service = turns.popleft()
        order.append(lines[service].popleft())
        if lines[service]:
            turns.append(service)
    return order


def _epoch(moment: dt.datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def waiting_builds(session: Session) -> list[Waiting]:
    """Queued builds, except those a newer queued build of their environment supersedes
    (its supersede task cancels them: building them would be wasted); newer as
    :func:`ancestry.is_newer` tells from the push payloads alone."""
    rows = session.execute(
        select(
            Build.id,
            Build.attempt,
            Build.service_id,
            Build.environment_id,
            Build.commit_sha,
            Build.pushed_at,
            Build.created_at,
            Build.ref,
            Build.untrusted,
        ).where(Build.status == BuildStatus.QUEUED)
    ).all()
    by_environment: dict[int, list[Any]] = {}
    for row in rows:
        by_environment.setdefault(row.environment_id, []).append(row)
    waiting = []
    for environment_id, queued in by_environment.items():
        facts = ancestry.facts_for(session, environment_id) if len(queued) > 1 else {}
        newest = queued[0]
        for row in queued[1:]:
            if ancestry.is_newer(ancestry.of_build(row), ancestry.of_build(newest), facts):
                newest = row
        waiting.append(
            Waiting(
                newest.id,
                newest.attempt,
                newest.service_id,
                _epoch(newest.created_at),
                bool(newest.untrusted),
            )
        )
    return waiting


def workers_at_work(session: Session, *, untrusted: bool) -> int:
    """Build workers that heartbeated a build of that kind within WORKERS_SEEN_WITHIN."""
    count = session.scalar(
        select(func.count(func.distinct(Build.worker))).where(
            Build.worker.is_not(None),
            Build.heartbeat_at >= utcnow() - WORKERS_SEEN_WITHIN,
            Build.untrusted.is_(untrusted),
        )
    )
    return int(count or 0)


def workers_seen(session: Session, *, untrusted: bool = False) -> int:
    """Build workers at work lately on builds of that kind (at least one): how many
    builds may wait for them."""
    return max(1, workers_at_work(session, untrusted=untrusted))


def waiting_reason(session: Session, build: Build) -> str | None:
    """Why a queued build is not taken, when Portside can tell: no worker of its lane
    was seen lately (so it is not simply waiting its turn); why a built one waits at a
    gate (its environment's reason). None otherwise, and for a build that is neither. A
    worker idle longer than WORKERS_SEEN_WITHIN is not seen until it takes a build."""
    if build.status in gates.HELD:
        return build.environment.status_reason
    untrusted = bool(build.untrusted)
    if build.status != BuildStatus.QUEUED or workers_at_work(session, untrusted=untrusted):
        return None
    return NO_UNTRUSTED_WORKER if build.untrusted else NO_WORKER


def _last_started(session: Session, service_ids: set[int]) -> dict[int, float]:
    """When a build of each service last started: how recently the service was served."""
    rows = session.execute(
        select(Build.service_id, func.max(Build.started_at))
        .where(Build.service_id.in_(service_ids))
        .group_by(Build.service_id)
    ).all()
    return {service_id: _epoch(started) for service_id, started in rows if started is not None}


def _dispatched(redis: Redis, key: str) -> dict[str, float]:
    entries: Sequence[tuple[Any, float]] = redis.zrange(  # type: ignore[assignment]
        key, 0, -1, withscores=True
    )
    return {
        member.decode() if isinstance(member, bytes) else str(member): float(at)
        for member, at in entries
    }


def dispatch(
    session: Session,
    redis: Redis,
    send: Send,
    *,
    shared_queue_length: QueueLength,
    lost_after: dt.timedelta,
) -> list[int]:
    """Send the next builds to the shared queues, in each up to as many as workers of
    that kind were seen, less the builds still waiting there; return their ids.

    Which builds wait there is kept in Redis beside their messages: a Redis that loses
    its data loses both, and the builds are sent again (the database keeps them queued).
    A message out for ``lost_after`` while the queue is empty went with a worker that
    died before claiming it, and is sent again. A build sent twice runs once: claiming
    its first step lets one message through and refuses the other.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DISPATCH_LOCK})
    waiting = waiting_builds(session)
    sent: list[int] = []
    for untrusted in (False, True):
        lane = {build.member: build for build in waiting if build.untrusted == untrusted}
        sent += _dispatch_lane(
            session,
            redis,
            lane,
            send=send,
            shared_queue_length=shared_queue_length,
            lost_after=lost_after,
            untrusted=untrusted,
        )
    return sent


def _dispatch_lane(
    session: Session,
    redis: Redis,
    waiting: dict[str, Waiting],
    *,
    send: Send,
    shared_queue_length: QueueLength,
    lost_after: dt.timedelta,
    untrusted: bool,
) -> list[int]:
    """dispatch() for the builds of one kind, ``waiting`` by member."""
    key = UNTRUSTED_DISPATCHED_KEY if untrusted else DISPATCHED_KEY
    kind: dict[str, bool] = {"untrusted": True} if untrusted else {}
    marked = _dispatched(redis, key)
    now = time.time()
    gone = [member for member in marked if member not in waiting]
    lost = [
        member
        for member, at in marked.items()
        if member in waiting and now - at > lost_after.total_seconds()
    ]
    if lost and shared_queue_length(**kind) > 0:
        lost = []  # they may still be in the queue, behind busy workers
    if lost:
        log.warning("builds %s left for the queue but never started; sending them again", lost)
    if gone or lost:
        redis.zrem(key, *gone, *lost)
    out = {member: at for member, at in marked.items() if member in waiting and member not in lost}
    free = workers_seen(session, untrusted=untrusted) - len(out)
    candidates = [build for member, build in waiting.items() if member not in out]
    if free <= 0 or not candidates:
        return []
    served = _last_started(session, {build.service_id for build in candidates})
    for member, at in out.items():
        service_id = waiting[member].service_id
        served[service_id] = max(served.get(service_id, -math.inf), at)
    chosen = fair_order(candidates, served)[:free]
    for build in chosen:
        send(build.build_id, build.attempt, **kind)
        redis.zadd(key, {build.member: now})
    return [build.build_id for build in chosen]
