"""The outbox relay: sends committed deliveries to the control queue.

The webhook receiver only commits a ``received`` row (and, on PostgreSQL, a
``NOTIFY portside_deliveries`` with it). A thread of each control worker waits for that
notification (or polls, on SQLite and as a safety net), locks the oldest received rows
(``FOR UPDATE SKIP LOCKED``, so relays in several workers never send the same row), sends
``portside.process_delivery`` for each and marks them ``enqueued`` in the same
transaction. A relay that dies before its commit leaves its rows ``received`` for the
next round; a message lost after it (Redis restarted) is re-sent by the beat re-drive
after ``PORTSIDE_REDRIVE_AFTER``. Processing is idempotent, so a second send is harmless.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
from collections.abc import Callable, Iterator
from typing import Any

from controlplane.db import Database
from controlplane.services import deliveries

log = logging.getLogger(__name__)

# Rows sent per transaction.
BATCH = 100
# Seconds between looks at the table when no notification came (a missed NOTIFY, SQLite).
POLL_INTERVAL = 5.0
SQLITE_POLL_INTERVAL = 0.5
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)

Wait = Callable[[float], None]


class DeliveryRelay:
    """Moves received deliveries to the control queue, oldest first."""

    def __init__(self, database: Database, send: Callable[[int], None]) -> None:
        self.database = database
        self.send = send
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="delivery-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                with self.listening() as wait:
                    failures = 0
                    while not self.stopping.is_set():
                        while self.relay_once() == BATCH and not self.stopping.is_set():
                            pass
                        wait(POLL_INTERVAL)
            except Exception as exc:  # database or broker down: the rows stay received
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("delivery relay: %s; retrying in %ss", exc, delay)
                self.stopping.wait(delay)

    def relay_once(self) -> int:
        """Send one batch of received deliveries; return how many were sent."""
        with self.database.session_scope() as session:
            delivery_ids = deliveries.claim_received(session, BATCH)
            for delivery_id in delivery_ids:
                self.send(delivery_id)
            if delivery_ids:
                deliveries.mark_sent(session, delivery_ids)
        return len(delivery_ids)

    @contextlib.contextmanager
    def listening(self) -> Iterator[Wait]:
        """A ``wait(timeout)`` that returns early when a delivery is committed."""
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
                cursor.execute(f"LISTEN {deliveries.CHANNEL}")

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
