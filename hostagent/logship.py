"""Runtime logs: the agent reads what its containers print and ships it to the control
plane in labelled batches (``POST /v1/agent/logs``).

One thread polls ``docker logs --since`` for each running container of this host every
``interval`` seconds, rather than a thread per container: the number of threads and
connections stays fixed however many containers run. Lines wait in a bounded buffer; when
the control plane is down or slow the oldest are dropped and the next batch says how many
were lost. Nothing here can block the reconcile loop or touch a container.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import docker.errors

from hostagent import labels as lbl
from hostagent.client import backoff_delay
from hostagent.errors import AgentError

log = logging.getLogger(__name__)

MAX_BUFFERED = 10_000
BATCH = 500
# A container seen for the first time (or again after an agent restart) ships at most
# this many of its last lines per stream.
FIRST_TAIL = 200
MAX_LINE = 8192
STREAMS = ("stdout", "stderr")
# What Docker answers for the logs of a container removed, or being removed, meanwhile.
GONE = (404, 409)


@dataclass(frozen=True)
class Followed:
    """What a container's lines are labelled with."""

    id: str
    name: str
    environment: str
    kind: str
    service: str


def parse_line(raw: str) -> tuple[str, str]:
    """(timestamp, text) of a ``docker logs --timestamps`` line."""
    stamp, _, text = raw.partition(" ")
    return stamp, text


def since_seconds(stamp: str) -> float:
    """Docker's RFC 3339 (nanoseconds) stamp as seconds, rounded down: ``--since`` is
    inclusive, so the line at ``stamp`` comes again and is skipped by comparing stamps."""
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    whole = dt.datetime.fromisoformat(seconds).replace(tzinfo=dt.UTC).timestamp()
    return whole + int((fraction or "0")[:6].ljust(6, "0")) / 1e6


class LogShipper:
    """Follows the containers of ``host`` on ``client`` and hands batches to ``send``."""

    def __init__(
        self,
        client: Any,
        send: Callable[[Mapping[str, Any]], None],
        host: Callable[[], str | None],
        *,
        interval: float = 1.0,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.client = client
        self.send = send
        self.host = host
        self.interval = interval
        self.buffer: deque[dict[str, Any]] = deque(maxlen=max_buffered)
        self.dropped = 0
        self._last: dict[tuple[str, str], str] = {}
        self._failures = 0
        self._retry_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="portside-logship", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.collect()
                if time.monotonic() >= self._retry_at:
                    self.flush()
            except Exception:  # a Docker hiccup: the next tick reads from where it was
                log.warning("log shipping tick failed", exc_info=True)

    def containers(self) -> list[Followed]:
        """The running containers of this host's environments."""
        host = self.host()
        if not host:  # before the first desired state: whose containers is not known yet
            return []
        filters = {"label": [lbl.ENVIRONMENT, f"{lbl.HOST}={host}"], "status": "running"}
        found = []
        for summary in self.client.api.containers(filters=filters):
            labels = summary.get("Labels") or {}
            names = summary.get("Names") or [summary["Id"][:12]]
            found.append(
                Followed(
                    summary["Id"],
                    names[0].lstrip("/"),
                    labels[lbl.ENVIRONMENT],
                    labels.get(lbl.KIND, ""),
                    labels.get(lbl.COMPOSE_SERVICE, ""),
                )
            )
        return found

    def collect(self) -> None:
        """Read each running container's new lines into the buffer."""
        running = self.containers()
        alive = {c.id for c in running}
        for key in [key for key in self._last if key[0] not in alive]:
            del self._last[key]  # memory follows the containers that run
        for container in running:
            for stream in STREAMS:
                self._read(container, stream)

    def _read(self, container: Followed, stream: str) -> None:
        last = self._last.get((container.id, stream))
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        options: dict[str, Any] = {
            "stdout": stream == "stdout",
            "stderr": stream == "stderr",
            "timestamps": True,
        }
        if last is None:
            options["tail"] = FIRST_TAIL
        else:
            options["since"] = since_seconds(last)
        try:
            raw = self.client.api.logs(container.id, **options)
        except docker.errors.APIError as exc:
            if exc.status_code in GONE:  # removed (or being removed) since it was listed
                return
            raise
        for row in raw.decode("utf-8", "replace").splitlines():
            stamp, text = parse_line(row)
            if last is not None and stamp <= last:
                continue
            last = stamp
            self._push(
                {
                    "environment": container.environment,
                    "service": container.service,
                    "kind": container.kind,
                    "container": container.name,
                    "stream": stream,
                    "time": stamp,
                    "line": text[:MAX_LINE],
                }
            )
        if last is not None:
            self._last[(container.id, stream)] = last
        else:  # nothing printed yet: follow from now on, not from the first tail again
            self._last[(container.id, stream)] = now

    def _push(self, entry: dict[str, Any]) -> None:
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1  # the deque drops the oldest line itself
        self.buffer.append(entry)

    def flush(self) -> None:
        """Send what is buffered in batches; on failure keep it and back off."""
        while self.buffer or self.dropped:
            batch = [self.buffer[i] for i in range(min(BATCH, len(self.buffer)))]
            dropped = self.dropped
            try:
                self.send({"entries": batch, "dropped": dropped})
            except AgentError as exc:
                self._failures += 1
                self._retry_at = time.monotonic() + backoff_delay(self._failures - 1, cap=30.0)
                log.warning("logs not shipped (%d buffered): %s", len(self.buffer), exc)
                return
            self._failures = 0
            self.dropped -= dropped
            for _ in batch:
                self.buffer.popleft()
