"""The delivery relay: turns delivery ids announced by the web process into control tasks.

The webhook receiver only LPUSHes a committed delivery's id (see
:func:`tasks.pipeline.announce_delivery`); a thread of each control worker pops them in
order and sends ``portside.process_delivery``. An id lost in between (a relay killed
after its pop, Redis restarted) leaves its row ``enqueued``, and the outbox
(``portside.redrive_deliveries``) sends it again after ``ENQUEUED_GRACE``; processing is
idempotent, so a second send is harmless.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from redis import Redis

from tasks.pipeline import INCOMING_DELIVERIES

log = logging.getLogger(__name__)

# Ids taken per round trip once the first one woke the relay.
BATCH = 100
# Seconds a pop blocks, so a stop request is noticed promptly.
POP_TIMEOUT = 1
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)


class DeliveryRelay:
    """Moves ids from the incoming list to the control queue, oldest first."""

    def __init__(self, broker: Redis, send: Callable[[int], None]) -> None:
        self.broker = broker
        self.send = send
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="delivery-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = POP_TIMEOUT + 2) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                self.relay_once()
                failures = 0
            except Exception as exc:  # the broker is down: wait; unsent ids stay listed
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("delivery relay: broker unavailable (%s); retrying in %ss", exc, delay)
                self.stopping.wait(delay)

    def relay_once(self) -> int:
        """Send what is waiting (blocking up to POP_TIMEOUT for the first id)."""
        first = self.broker.brpop([INCOMING_DELIVERIES], timeout=POP_TIMEOUT)
        if first is None:
            return 0
        more = self.broker.rpop(INCOMING_DELIVERIES, BATCH - 1) or []
        ids = [int(first[1]), *(int(raw) for raw in more)]
        for index, delivery_id in enumerate(ids):
            try:
                self.send(delivery_id)
            except Exception:
                # Put the unsent ones back at the head, in order, before giving up.
                self.broker.rpush(INCOMING_DELIVERIES, *reversed(ids[index:]))
                raise
        return len(ids)
