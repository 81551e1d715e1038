"""Build logs: a Redis stream per build while it runs, the full text in PostgreSQL after.

Redis holds the live tail for followers; losing it loses no record once a build ended,
because the log is copied to the build row when it finishes.

A build's output is the code's own, so it is capped: a line at :data:`MAX_LINE_BYTES`
(cut, with a marker), a build at :data:`MAX_BUILD_BYTES` (then one :data:`TRUNCATED` line
and the rest dropped). The build worker's writer keeps to both; the control plane cuts
again where it reads and persists, so a worker writing to Redis by itself gets no more in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from redis import Redis
from sqlalchemy.orm import Session

from controlplane.models import Build

MAX_LINES = 100_000
MAX_LINE_BYTES = 4 * 1024
MAX_BUILD_BYTES = 5 * 1024 * 1024
LINE_CUT = " [line truncated]"
TRUNCATED = f"[log truncated: this build wrote more than {MAX_BUILD_BYTES // 2**20} MiB]"
END_MARKER = "end"
KEEP_SECONDS = 24 * 3600


def stream_key(build_id: int) -> str:
    return f"portside:build:{build_id}:log"


def size_key(build_id: int) -> str:
    """How many bytes of the build's log were written so far (the per-build cap)."""
    return f"portside:build:{build_id}:log-bytes"


def cap_line(line: str) -> str:
    """``line`` cut to at most MAX_LINE_BYTES of UTF-8, the marker included."""
    encoded = line.encode()
    if len(encoded) <= MAX_LINE_BYTES:
        return line
    room = MAX_LINE_BYTES - len(LINE_CUT.encode())
    return encoded[:room].decode(errors="ignore") + LINE_CUT


def _size(line: str) -> int:
    return len(line.encode()) + 1  # its newline


def _fitting(lines: list[str], written: int) -> tuple[list[str], bool]:
    """The lines that fit under MAX_BUILD_BYTES after ``written`` bytes, and whether
    some did not (the log is then cut there)."""
    kept: list[str] = []
    for line in lines:
        written += _size(line)
        if written > MAX_BUILD_BYTES:
            return kept, True
        kept.append(line)
    return kept, False


def cap(lines: list[str]) -> list[str]:
    """A whole log held to both caps: what the control plane keeps of a build."""
    body = [cap_line(line) for line in lines if line != TRUNCATED]
    kept, cut = _fitting(body, 0)
    return [*kept, TRUNCATED] if cut or len(body) < len(lines) else kept


def append(redis: Redis, build_id: int, lines: list[str]) -> None:
    """Add lines to a build's live log (used by the build worker's task wrapper), each
    line and the whole build within their caps; the batch that reaches the build's cap
    ends with :data:`TRUNCATED`, and every later one is dropped."""
    capped = [cap_line(line) for line in lines]
    size = sum(_size(line) for line in capped)
    if not size:
        return
    written = int(redis.incrby(size_key(build_id), size)) - size
    if written == 0:
        redis.expire(size_key(build_id), KEEP_SECONDS)
    if written > MAX_BUILD_BYTES:
        return  # reached, and said so, by an earlier batch
    kept, cut = _fitting(capped, written)
    if cut:
        kept.append(TRUNCATED)
    pipe = redis.pipeline(transaction=False)
    for line in kept:
        pipe.xadd(stream_key(build_id), {"line": line}, maxlen=MAX_LINES, approximate=True)
    pipe.execute()


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
            last = _text(entry_id)
            yield _entry(entry_id, fields)


def persist(session: Session, redis: Redis, build: Build) -> None:
    """Copy the live log into the build row (when the build has ended), within the caps
    whatever wrote it."""
    lines = cap([line for _id, line in read(redis, build.id) if line is not None])
    if lines or build.log is None:
        build.log = "\n".join(lines)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(entry_id: bytes | str, fields: dict[Any, Any]) -> tuple[str, str | None]:
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    line = decoded.get("line")
    return _text(entry_id), cap_line(line) if line is not None else None
