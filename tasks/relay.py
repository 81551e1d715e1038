"""The outbox relay, which sends committed deliveries to the control queue, and the build
dispatcher, which sends queued builds to the build workers' shared queue.

The webhook receiver only commits a ``received`` row (and, on PostgreSQL, sends a
``NOTIFY portside_deliveries`` after it). A thread of each control worker waits for that
notification (or polls, on SQLite and as a safety net), locks the oldest received rows
(``FOR UPDATE SKIP LOCKED``, so relays in several workers never send the same row), sends
``portside.process_delivery`` for each and marks them ``enqueued`` in the same
transaction. A relay that dies before its commit leaves its rows ``received`` for the
next round; a message lost after it (Redis restarted) is re-sent by the beat re-drive
after ``PORTSIDE_REDRIVE_AFTER``. Processing is idempotent, so a second send is harmless.

The build dispatcher is woken the same way (``NOTIFY portside_builds``, sent when a build
is queued, taken over or starts) and keeps a few builds, chosen fairly, waiting in the
shared ``builds`` queue; the rest wait in the database, where nothing is lost with Redis.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import select
import threading
from collections.abc import Callable, Iterator
from typing import Any

from redis import Redis

from controlplane.db import Database
from controlplane.services import builds, deliveries

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
    channel = ""

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


class DeliveryRelay(_Loop):
    """Moves received deliveries to the control queue, oldest first."""

    name = "delivery-relay"
    channel = deliveries.CHANNEL

    def __init__(self, database: Database, send: Callable[[int], None]) -> None:
        super().__init__(database)
        self.send = send

    def round(self) -> bool:
        return self.relay_once() == BATCH

    def relay_once(self) -> int:
        """Send one batch of received deliveries; return how many were sent."""
        with self.database.session_scope() as session:
            delivery_ids = deliveries.claim_received(session, BATCH)
            for delivery_id in delivery_ids:
                self.send(delivery_id)
            if delivery_ids:
                deliveries.mark_sent(session, delivery_ids)
        return len(delivery_ids)


class BuildDispatcher(_Loop):
    """Sends queued builds to the shared build queue as places there free up, choosing
    fairly between services (controlplane.services.builds.dispatch). Woken when a build
    is queued or starts; the poll also notices cancellations and lost messages."""

    name = "build-dispatcher"
    channel = builds.DISPATCH_CHANNEL

    def __init__(
        self,
        database: Database,
        redis: Redis,
        send: builds.Send,
        shared_queue_length: builds.QueueLength,
        lost_after: dt.timedelta,
    ) -> None:
        super().__init__(database)
        self.redis = redis
        self.send = send
        self.shared_queue_length = shared_queue_length
        self.lost_after = lost_after

    def round(self) -> bool:
        self.dispatch_once()
        return False

    def dispatch_once(self) -> list[int]:
        """One look at the queue; return the ids of the builds sent."""
        with self.database.session_scope() as session:
            return builds.dispatch(
                session,
                self.redis,
                self.send,
                shared_queue_length=self.shared_queue_length,
                lost_after=self.lost_after,
            )
