"""What watches a build step while it runs: its log, masked, and its liveness.

:class:`BuildLog` forwards the step's lines with every known secret replaced; :class:`Watch`
sends heartbeats (a dead worker's build is taken over) and watches for the control plane's
word to stop the build.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from buildworker.api import ControlPlane, StepRefused

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
STOP_POLL_SECONDS = 1.0
LogSink = Callable[[int, list[str]], None]
# Why the control plane stopped a build's attempt (its Redis stop key), or None.
StopProbe = Callable[[int, int], str | None]


class BuildLog:
    """Forwards a build's log lines to the sink with every known secret replaced by ***."""

    def __init__(self, sink: LogSink, build_id: int, secrets: Iterable[str] = ()) -> None:
        self._sink = sink
        self._build_id = build_id
        self._secrets: set[str] = set()
        self.hide(*secrets)

    def hide(self, *secrets: str | None) -> None:
        self._secrets.update(s for s in secrets if s and len(s) >= 4)

    def mask(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def __call__(self, text: str) -> None:
        lines = [self.mask(line) for line in text.rstrip("\n").split("\n")]
        self._sink(self._build_id, lines)


class Stop(threading.Event):
    """Set, with why, when the control plane stops the build the step belongs to."""

    reason = ""

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.set()


class Watch:
    """While a step runs: tells the control plane it is alive (so a dead worker's build
    is taken over), and watches for the word to stop it, read from ``stop_reason`` every
    :data:`STOP_POLL_SECONDS` or given as a 409 answer to a heartbeat."""

    def __init__(
        self, api: ControlPlane, build_id: int, attempt: int, stop_reason: StopProbe, stop: Stop
    ) -> None:
        self._api = api
        self._build_id = build_id
        self._attempt = attempt
        self._stop_reason = stop_reason
        self._stop = stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        beat_at = time.monotonic() + HEARTBEAT_SECONDS
        while not self._done.wait(STOP_POLL_SECONDS):
            if reason := self._stop_reason(self._build_id, self._attempt):
                self._stop.stop(reason)
            if time.monotonic() >= beat_at:
                beat_at = time.monotonic() + HEARTBEAT_SECONDS
                self._beat()

    def _beat(self) -> None:
        try:
            self._api.heartbeat(self._build_id, self._attempt)
        except StepRefused as exc:
            self._stop.stop(str(exc))
        except Exception as exc:
            log.warning("heartbeat of build %s failed: %s", self._build_id, exc)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=1)


def never_stopped(_build_id: int, _attempt: int) -> None:
    """The stop probe of a runner nobody stops (tests, a worker without Redis)."""
