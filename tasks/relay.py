"""The one relay: everything the control plane sends after a commit leaves through it.

Three kinds of committed rows wait in PostgreSQL, and each control worker runs one relay
thread that sends them, woken by a ``NOTIFY portside_outbox`` delivered with the commit
that wrote them (or polling, on SQLite and as a safety net):

- **deliveries** the webhook receiver committed ``received`` (its own fast insert): sent
  as ``portside.process_delivery`` and marked ``enqueued``;
- **outbox rows** (:mod:`controlplane.services.effects`: GitHub feedback, notifications,
  image deletions, a new build's supersede check): sent as their control task and
  deleted;
- **queued builds**: a few, chosen fairly, are kept waiting in the shared ``builds``
  queues (:func:`controlplane.services.dispatch.dispatch`); the rest wait in the database.

Rows are locked ``FOR UPDATE SKIP LOCKED`` and marked in the transaction that sends them,
so relays in several workers never send a row twice, and a relay that dies before its
commit leaves them for the next round. A message lost after it (Redis restarted) is
re-driven: deliveries by beat after ``PORTSIDE_REDRIVE_AFTER``, builds by the dispatcher
after ``PORTSIDE_BUILD_STALE_AFTER``; processing is idempotent, so a second send is
harmless.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import select
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from redis import Redis
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.services import deliveries, dispatch, effects

log = logging.getLogger(__name__)

# Rows sent per transaction.
BATCH = 100
# Seconds between looks at the table when no notification came (a missed NOTIFY, SQLite).
POLL_INTERVAL = 5.0
SQLITE_POLL_INTERVAL = 0.5
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)

Wait = Callable[[float], None]


class _Loop:
    """A thread doing rounds of work: whenever its channel is notified, and every
    POLL_INTERVAL anyway (a missed NOTIFY, SQLite); a failure is retried with backoff."""

    name = "loop"
    channel = effects.CHANNEL

    def __init__(self, database: Database) -> None:
        self.database = database
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def round(self) -> bool:
        """One round of work; True when there is more to do at once."""
        raise NotImplementedError

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                with self.listening() as wait:
                    failures = 0
                    while not self.stopping.is_set():
                        while self.round() and not self.stopping.is_set():
                            pass
                        wait(POLL_INTERVAL)
            except Exception as exc:  # database or broker down: the rows wait
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("%s: %s; retrying in %ss", self.name, exc, delay)
                self.stopping.wait(delay)

    @contextlib.contextmanager
    def listening(self) -> Iterator[Wait]:
        """A ``wait(timeout)`` that returns early when the channel is notified."""
        if self.database.engine.dialect.name != "postgresql":

            def poll(timeout: float) -> None:
                self.stopping.wait(min(timeout, SQLITE_POLL_INTERVAL))

            yield poll
            return
        # A connection of its own, never returned to the pool while it listens.
        pooled = self.database.engine.raw_connection()
        try:
            connection: Any = pooled.driver_connection
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {self.channel}")

            def wait(timeout: float) -> None:
                # Short slices, so a stop request is noticed within a second.
                remaining = timeout
                while remaining > 0 and not self.stopping.is_set():
                    slice_ = min(remaining, 1.0)
                    ready, _, _ = select.select([connection], [], [], slice_)
                    if ready:
                        connection.poll()
                        if connection.notifies:
                            connection.notifies.clear()
                            return
                    remaining -= slice_

            yield wait
        finally:
            pooled.invalidate()


T = TypeVar("T")


def _attempt(part: Callable[[], T]) -> T | Exception:
    """``part()``, or the exception it raised (the round goes on with the next part)."""
    try:
        return part()
    except Exception as exc:
        return exc


def _send_each(
    session: Session,
    rows: list[T],
    send: Callable[[T], None],
    mark_sent: Callable[[Session, list[T]], None],
) -> None:
    """Send ``rows`` in order and mark those sent, committed even when a send fails
    part-way (the broker went away): only the rest are sent again."""
    sent: list[T] = []
    try:
        for row in rows:
            send(row)
            sent.append(row)
    finally:
        if sent:
            mark_sent(session, sent)
            session.commit()


@dataclass(frozen=True, slots=True)
class Senders:
    """How the relay sends each kind of row (tasks.pipeline's, or a test's)."""

    delivery: Callable[[int], None]
    effect: Callable[[str, list[Any]], None]
    build: dispatch.Send
    shared_queue_length: dispatch.QueueLength


class Relay(_Loop):
    """Sends received deliveries, outbox rows and queued builds, oldest first."""

    name = "relay"

    def __init__(
        self, database: Database, redis: Redis, send: Senders, lost_after: dt.timedelta
    ) -> None:
        super().__init__(database)
        self.redis = redis
        self.send = send
        self.lost_after = lost_after

    def round(self) -> bool:
        """Deliveries, then builds (what a worker waits for), then effects; one part
        failing (a row it cannot send) does not hold up the others this round."""
        delivered, dispatched, effected = (
            _attempt(part)
            for part in (self.relay_deliveries, self.dispatch_builds, self.relay_effects)
        )
        for outcome in (delivered, dispatched, effected):
            if isinstance(outcome, Exception):
                raise outcome
        return BATCH in (delivered, effected)

    def relay_deliveries(self) -> int:
        """Send one batch of received deliveries; return how many were sent."""
        with self.database.session_scope() as session:
            delivery_ids = deliveries.claim_received(session, BATCH)
            _send_each(session, delivery_ids, self.send.delivery, deliveries.mark_sent)
        return len(delivery_ids)

    def relay_effects(self) -> int:
        """Send one batch of outbox rows and delete them; return how many were sent."""
        with self.database.session_scope() as session:
            messages = effects.claim(session, BATCH)
            _send_each(
                session,
                messages,
                lambda message: self.send.effect(message.kind, message.args),
                effects.remove,
            )
        return len(messages)

    def dispatch_builds(self) -> list[int]:
        """One look at the build queue; return the ids of the builds sent."""
        with self.database.session_scope() as session:
            return dispatch.dispatch(
                session,
                self.redis,
                self.send.build,
                shared_queue_length=self.send.shared_queue_length,
                lost_after=self.lost_after,
            )
