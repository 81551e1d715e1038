"""Build logs: a Redis stream per build while it runs, the full text in PostgreSQL after.

Redis holds the live tail for followers; losing it loses no record once a build ended,
because the log is copied to the build row when it finishes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from redis import Redis
from sqlalchemy.orm import Session

from controlplane.models import Build

MAX_LINES = 100_000
END_MARKER = "end"


def stream_key(build_id: int) -> str:
    return f"portside:build:{build_id}:log"


def append(redis: Redis, build_id: int, lines: list[str]) -> None:
    """Add lines to a build's live log (used by the build worker's task wrapper)."""
    pipe = redis.pipeline(transaction=False)
    for line in lines:
        pipe.xadd(stream_key(build_id), {"line": line}, maxlen=MAX_LINES, approximate=True)
    pipe.execute()


def close(redis: Redis, build_id: int) -> None:
    """Tell followers the log is complete."""
    redis.xadd(stream_key(build_id), {END_MARKER: "1"}, maxlen=MAX_LINES, approximate=True)
    redis.expire(stream_key(build_id), 24 * 3600)


def read(redis: Redis, build_id: int, after: str = "-") -> list[tuple[str, str | None]]:
    """Entries after ``after`` as (id, line); a None line marks the end."""
    start = "-" if after == "-" else f"({after}"
    entries: Any = redis.xrange(stream_key(build_id), min=start, max="+")
    return [_entry(entry_id, fields) for entry_id, fields in entries]


def follow(
    redis: Redis, build_id: int, after: str = "0-0", block_ms: int = 15000
) -> Iterator[tuple[str, str | None]]:
    """Yield entries as they arrive; an empty wait yields ("", None) as a keep-alive."""
    last = after
    while True:
        batches: Any = redis.xread({stream_key(build_id): last}, block=block_ms, count=500)
        if not batches:
            yield "", None
            continue
        for entry_id, fields in batches[0][1]:
            last = _text(entry_id)
            yield _entry(entry_id, fields)


def persist(session: Session, redis: Redis, build: Build) -> None:
    """Copy the live log into the build row (when the build has ended)."""
    lines = [line for _id, line in read(redis, build.id) if line is not None]
    if lines or build.log is None:
        build.log = "\n".join(lines)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(entry_id: bytes | str, fields: dict[Any, Any]) -> tuple[str, str | None]:
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    return _text(entry_id), decoded.get("line")
