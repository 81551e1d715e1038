"""Telling a build worker to stop a build it is running (superseded, cancelled).

A transaction that cancels a running build notes it (:func:`note_stop`); once committed,
an after-commit hook (:func:`requester`) sets a Redis key per build attempt, which the
worker running it reads every :data:`POLL_SECONDS` while a step runs
(``buildworker.channel.stop_reason``); it then stops its ``docker build`` and removes the
workspace. A key rather than a pub/sub message: it is
still there for a worker that was reconnecting when it was set. Should Redis lose it, the
worker's next heartbeat is answered 409 and it stops all the same.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping

from redis import Redis, RedisError
from sqlalchemy.orm import Session

from contracts.buildredis import stop_key

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
KEEP_SECONDS = 24 * 3600
_PENDING = "portside.stopped_builds"  # session.info: stop signals due on commit


def note_stop(session: Session, build_id: int, attempt: int, reason: str) -> None:
    """Have the worker running that attempt stop it once this transaction commits."""
    session.info.setdefault(_PENDING, {})[(build_id, attempt)] = reason


def request_stop(redis: Redis, reasons: Mapping[tuple[int, int], str]) -> None:
    """Ask the workers running the (build, attempt)s ``reasons`` names to stop, saying why."""
    with redis.pipeline(transaction=False) as pipe:
        for (build_id, attempt), reason in reasons.items():
            pipe.set(stop_key(build_id, attempt), reason, ex=KEEP_SECONDS)
        pipe.execute()


def requester(redis: Redis) -> Callable[[Session], None]:
    """An after-commit hook sending the stop signals a transaction noted."""

    def request_committed(session: Session) -> None:
        reasons = session.info.pop(_PENDING, {})
        if not reasons:
            return
        # Redis being down delays the stop to the worker's next heartbeat, no more.
        with contextlib.suppress(RedisError):
            request_stop(redis, reasons)

    return request_committed
