"""Build logs: a Redis stream per build while it runs, the full text in PostgreSQL after.

Redis holds the live tail for followers; losing it loses no record once a build ended,
because the log is copied to the build row when it finishes.

This is the reader's side; the writer is the build worker's (:mod:`buildworker.channel`).
Both keep to the caps of :mod:`contracts.buildredis`: the control plane cuts again where
it reads and persists, so a worker writing to Redis by itself gets no more in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from redis import Redis
from sqlalchemy.orm import Session

from contracts.buildredis import (
    END_MARKER,
    KEEP_SECONDS,
    MAX_LINES,
    TRUNCATED,
    cap_line,
    fitting,
    size_key,
    stream_key,
)
from controlplane.models import Build


def cap(lines: list[str]) -> list[str]:
    """A whole log held to both caps: what the control plane keeps of a build."""
    body = [cap_line(line) for line in lines if line != TRUNCATED]
    kept, cut = fitting(body, 0)
    return [*kept, TRUNCATED] if cut or len(body) < len(lines) else kept


def close(redis: Redis, build_id: int) -> None:
    """Tell followers the log is complete."""
    redis.xadd(stream_key(build_id), {END_MARKER: "1"}, maxlen=MAX_LINES, approximate=True)
    redis.expire(stream_key(build_id), KEEP_SECONDS)
    redis.expire(size_key(build_id), KEEP_SECONDS)


def read(redis: Redis, build_id: int, after: str = "-") -> list[tuple[str, str | None]]:
    """Entries after ``after`` as (id, line); a None line marks the end."""
    start = "-" if after == "-" else f"({after}"
    entries: Any = redis.xrange(stream_key(build_id), min=start, max="+")
    return [_entry(entry_id, fields) for entry_id, fields in entries]


def follow(
    redis: Redis, build_id: int, after: str = "0-0", block_ms: int = 15000
) -> Iterator[tuple[str, str | None]]:
    """Yield entries as they arrive; an empty wait of ``block_ms`` yields ("", None).

    ``redis``'s socket timeout must outlast ``block_ms`` (the web pool's does not: use
    :func:`controlplane.services.logstream.blocking_redis`), or a quiet log raises.
    """
    last = after
    while True:
        batches: Any = redis.xread({stream_key(build_id): last}, block=block_ms, count=500)
        if not batches:
            yield "", None
            continue
        for entry_id, fields in batches[0][1]:
            last = redis_text(entry_id)
            yield _entry(entry_id, fields)


def persist(session: Session, redis: Redis, build: Build) -> None:
    """Copy the live log into the build row (when the build has ended), within the caps
    whatever wrote it."""
    lines = cap([line for _id, line in read(redis, build.id) if line is not None])
    if lines or build.log is None:
        build.log = "\n".join(lines)


def redis_text(value: bytes | str) -> str:
    """A Redis reply as text (the clients here do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value


def _entry(entry_id: bytes | str, fields: dict[Any, Any]) -> tuple[str, str | None]:
    decoded = {redis_text(k): redis_text(v) for k, v in fields.items()}
    line = decoded.get("line")
    return redis_text(entry_id), cap_line(line) if line is not None else None
