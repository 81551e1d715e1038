"""The delivery relay: turns delivery ids announced by the web process into control tasks.

The webhook receiver only LPUSHes a committed delivery's id (see
:func:`tasks.pipeline.announce_delivery`); a thread of each control worker moves the ids,
oldest first, to a list of its own (``LMOVE``, atomic), sends
``portside.process_delivery`` and then drops the id from its list. A relay killed in
between finds its ids there when it starts again and puts them back first. Whatever is
still lost (Redis restarted without persistence) leaves its row ``enqueued``, and the
outbox (``portside.redrive_deliveries``) sends it again after ``PORTSIDE_REDRIVE_AFTER``;
processing is idempotent, so a second send is harmless.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from redis import Redis

from tasks.pipeline import INCOMING_DELIVERIES

log = logging.getLogger(__name__)

# Seconds a move blocks, so a stop request is noticed promptly.
POP_TIMEOUT = 1
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)


def relaying_list(node: str) -> str:
    """The list holding the ids one relay took and has not sent yet."""
    return f"{INCOMING_DELIVERIES}:relaying:{node}"


class DeliveryRelay:
    """Moves ids from the incoming list to the control queue, oldest first."""

    def __init__(self, broker: Redis, send: Callable[[int], None], node: str) -> None:
        self.broker = broker
        self.send = send
        self.taken = relaying_list(node)
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
        recovered = False
        while not self.stopping.is_set():
            try:
                if not recovered:
                    self.give_back()
                    recovered = True
                self.relay_once()
                failures = 0
            except Exception as exc:  # the broker is down: wait; unsent ids stay listed
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("delivery relay: broker unavailable (%s); retrying in %ss", exc, delay)
                self.stopping.wait(delay)

    def give_back(self) -> int:
        """Return ids an earlier run of this relay took but never sent, to be sent first."""
        returned = 0
        while self.broker.lmove(self.taken, INCOMING_DELIVERIES, "LEFT", "RIGHT") is not None:
            returned += 1
        if returned:
            log.info("delivery relay: %d ids taken by an earlier run put back", returned)
        return returned

    def relay_once(self) -> bool:
        """Send the oldest waiting id (blocking up to POP_TIMEOUT for one)."""
        raw = self.broker.blmove(INCOMING_DELIVERIES, self.taken, POP_TIMEOUT, "RIGHT", "LEFT")
        if raw is None:
            return False
        raw = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            delivery_id = int(raw)
        except ValueError:  # not ours: nothing can ever send it
            log.error("delivery relay: dropped %r, not a delivery id", raw)
            self.broker.lrem(self.taken, 1, raw)
            return True
        try:
            self.send(delivery_id)
        except Exception:
            self.broker.lmove(self.taken, INCOMING_DELIVERIES, "LEFT", "RIGHT")
            raise
        self.broker.lrem(self.taken, 1, raw)
        return True
