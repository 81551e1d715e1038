"""A build's log as server-sent events: the one stream behind the API's
``GET /v1/builds/<id>/logs`` (``Accept: text/event-stream``) and the dashboard's
``/builds/<id>/log/stream``.

A follower waits on Redis with ``XREAD BLOCK`` for at most the keep-alive interval, on a
client of its own whose socket timeout outlasts that wait (the web process's shared pool
times out after 5 s, which ended every stream after 5 s of quiet). Each quiet interval
sends a comment, so proxies and clients see a live connection, and asks PostgreSQL
whether the build ended: a cancelled or superseded build never closes its log, and its
stream must end all the same. While streaming no database connection is held.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from redis import ConnectionPool, Redis
from sqlalchemy import select

from controlplane.db import Database
from controlplane.models import Build
from controlplane.services import logs
from controlplane.services.builds import FINISHED
from controlplane.services.gates import HELD

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
START = "0-0"
# A blocking read's socket waits this much longer than the read itself.
SOCKET_MARGIN_SECONDS = 10
# After the log's end marker, how long to wait for the build's final status to be
# committed (the worker closes the log just before the commit).
END_WAIT_SECONDS = 10.0
KEEPALIVE = ": keep-alive\n\n"
# Streams one web process follows at once (API and dashboard together): each holds a
# thread and a Redis connection while its build runs; the rest of the threads serve the
# API, the agents and GitHub's webhooks.
MAX_FOLLOWERS = 64

# A build whose log is complete: finished, or built and held at a deployment gate.
LOGGED = (*FINISHED, *HELD)


def readable_id(entry_id: str) -> bool:
    """Whether Redis can read after ``entry_id``: two numbers of at most 64 bits."""
    return STREAM_ID.fullmatch(entry_id) is not None and all(
        int(part) < 2**64 for part in entry_id.split("-")
    )


def lines_so_far(redis: Redis, build: Build) -> tuple[list[str], str]:
    """The build's log so far (the database's copy once it finished, else Redis's) and the
    id of the last entry read, where a stream of the rest resumes (:data:`START` if none)."""
    if build.status in FINISHED and build.log is not None:
        return (build.log.split("\n") if build.log else []), START
    entries = logs.read(redis, build.id)
    last = entries[-1][0] if entries else START
    return [line for _id, line in entries if line is not None], last


def blocking_redis(redis_url: str, keepalive_seconds: float) -> Redis:
    """A client for blocking reads of ``keepalive_seconds``: its sockets wait longer than
    a read blocks, and its pool is its own, so followers never starve short requests."""
    pool = ConnectionPool.from_url(
        redis_url,
        socket_connect_timeout=2,
        socket_timeout=keepalive_seconds + SOCKET_MARGIN_SECONDS,
    )
    return Redis(connection_pool=pool)


def event(data: Any, kind: str | None = None, entry_id: str | None = None) -> str:
    """One server-sent event; ``data`` as JSON (a log line is a JSON string)."""
    head = (f"id: {entry_id}\n" if entry_id else "") + (f"event: {kind}\n" if kind else "")
    return f"{head}data: {json.dumps(data)}\n\n"


@dataclass(frozen=True)
class LogStreams:
    """What a web process follows logs with (one per app)."""

    redis: Redis
    database: Database
    keepalive_seconds: float
    max_followers: int = MAX_FOLLOWERS
    _places: threading.BoundedSemaphore = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_places", threading.BoundedSemaphore(self.max_followers))

    def admit(self) -> Callable[[], None] | None:
        """A place for one more follower, as the function that gives it back, or None when
        all are taken: without a cap, one token could hold every thread of the process."""
        if not self._places.acquire(blocking=False):
            return None
        return self._places.release

    def events(self, build_id: int, after: str | None = None) -> Iterator[str]:
        """The build's log after the entry ``after`` (a Redis stream id, e.g. an
        EventSource's ``Last-Event-ID``; anything else means from the start): ``data``
        events with ids while it runs, then ``event: end`` with ``{"status": ...}``.

        A finished build replays its stored log, or when resuming, what Redis holds after
        ``after``. A running one is followed until its log's end marker or, in a quiet
        interval, until PostgreSQL says it finished (or was removed).
        """
        resume = after if after and readable_id(after) else START
        status, stored = self._build(build_id)
        if status is None or status in LOGGED:
            if stored is not None and resume == START:
                for text in stored.split("\n") if stored else []:
                    yield event(text)
                yield event({"status": status}, "end")
                return
            end_id = None
            for entry_id, line in logs.read(self.redis, build_id, resume):
                if line is None:
                    end_id = entry_id
                else:
                    yield event(line, entry_id=entry_id)
            yield event({"status": status}, "end", end_id)
            return
        yield ": stream open\n\n"
        block_ms = int(self.keepalive_seconds * 1000)
        for entry_id, line in logs.follow(self.redis, build_id, resume, block_ms):
            if line is not None:
                yield event(line, entry_id=entry_id)
            elif entry_id:  # the log's end marker
                yield event({"status": self._final_status(build_id)}, "end", entry_id)
                return
            else:
                status = self._status(build_id)
                if status is None or status in LOGGED:
                    yield event({"status": status}, "end")
                    return
                yield KEEPALIVE

    def _build(self, build_id: int) -> tuple[str | None, str | None]:
        """The build's status and stored log (None, None when it does not exist)."""
        row = self._row(select(Build.status, Build.log).where(Build.id == build_id))
        return (row[0], row[1]) if row is not None else (None, None)

    def _status(self, build_id: int) -> str | None:
        row = self._row(select(Build.status).where(Build.id == build_id))
        return row[0] if row is not None else None

    def _row(self, statement: Any) -> Any:
        """One row of ``statement``, read in a session closed at once."""
        session = self.database.new_session()
        try:
            return session.execute(statement).first()
        finally:
            session.close()

    def _final_status(self, build_id: int) -> str | None:
        """The build's status once its end is committed (the log closes just before)."""
        deadline = time.monotonic() + END_WAIT_SECONDS
        while True:
            status = self._status(build_id)
            if status is None or status in LOGGED or time.monotonic() > deadline:
                return status
            time.sleep(0.2)
