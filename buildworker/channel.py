"""A build worker's live channel through Redis: the log lines it writes for followers
and the stop signal it polls (keys and caps in :mod:`contracts.buildredis`)."""

from __future__ import annotations

from redis import Redis

from contracts.buildredis import (
    KEEP_SECONDS,
    MAX_BUILD_BYTES,
    MAX_LINES,
    TRUNCATED,
    cap_line,
    fitting,
    line_size,
    size_key,
    stop_key,
    stream_key,
)


def append(redis: Redis, build_id: int, lines: list[str]) -> None:
    """Add lines to a build's live log, each line and the whole build within their caps;
    the batch that reaches the build's cap ends with :data:`TRUNCATED`, and every later
    one is dropped."""
    capped = [cap_line(line) for line in lines]
    size = sum(line_size(line) for line in capped)
    if not size:
        return
    written = int(redis.incrby(size_key(build_id), size)) - size
    if written == 0:
        redis.expire(size_key(build_id), KEEP_SECONDS)
    if written > MAX_BUILD_BYTES:
        return  # reached, and said so, by an earlier batch
    kept, cut = fitting(capped, written)
    if cut:
        kept.append(TRUNCATED)
    pipe = redis.pipeline(transaction=False)
    for line in kept:
        pipe.xadd(stream_key(build_id), {"line": line}, maxlen=MAX_LINES, approximate=True)
    pipe.execute()


def stop_reason(redis: Redis, build_id: int, attempt: int) -> str | None:
    """Why the build's attempt must stop, or None while it may run on."""
    value = redis.get(stop_key(build_id, attempt))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
