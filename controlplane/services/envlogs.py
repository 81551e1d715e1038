"""Runtime logs of environments: a Redis stream per environment holding its recent lines.

Agents post what their containers print (:mod:`hostagent.logship`); each line is masked
with every secret value a text about the service could leak (:func:`variables.secrets_of`,
as GitHub feedback is), and appended to the environment's
stream, capped at exactly :data:`MAX_ENTRIES` (Redis trims the oldest as each line comes:
one entry evicted per entry added, cheap). Nothing is kept in
PostgreSQL: this is a recent window, not an archive (a team's own log system gets the
full output through Docker's logging drivers).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.masking import mask
from controlplane.errors import Malformed
from controlplane.models import Environment, Host
from controlplane.services import logstream, placements
from controlplane.services.logs import redis_text
from controlplane.services.variables import secrets_of
from controlplane.settings import Settings

MAX_ENTRIES = 5000
MAX_LINE = 8192
# Lines in one batch (the agent sends at most 500): a bound on one request's work.
MAX_BATCH = 1000
FIELDS = ("service", "kind", "container", "stream", "time", "line")


def stream_key(environment_id: int) -> str:
    return f"portside:envlogs:{environment_id}"


def append(
    session: Session, redis: Redis, settings: Settings, host: Host, batch: dict[str, Any]
) -> int:
    """Store an agent's batch; lines of environments not on ``host`` are ignored (an agent
    writes only its own). The agent's count of dropped lines is noted in each environment
    of the batch. Returns how many lines were stored."""
    entries = batch.get("entries")
    dropped = batch.get("dropped", 0)
    if not isinstance(entries, list) or not isinstance(dropped, int):
        raise Malformed("a log batch is {entries: [...], dropped: n}")
    if len(entries) > MAX_BATCH:
        raise Malformed(f"a log batch holds at most {MAX_BATCH} lines")
    names = {str(e.get("environment")) for e in entries if isinstance(e, dict)}
    environments = {
        env.name: env
        for env in session.scalars(
            select(Environment).where(placements.placed_on(host.id), Environment.name.in_(names))
        )
    }
    secrets = {
        service_id: secrets_of(session, settings, service_id)
        for service_id in {env.service_id for env in environments.values()}
    }
    pipe = redis.pipeline(transaction=False)
    stored = 0
    for env in environments.values():
        if dropped > 0:
            line = f"portside: the agent dropped {dropped} older lines it could not deliver"
            pipe.xadd(
                stream_key(env.id),
                {"stream": "agent", "line": line},
                maxlen=MAX_ENTRIES,
                approximate=False,
            )
    for entry in entries:
        target = (
            environments.get(str(entry.get("environment"))) if isinstance(entry, dict) else None
        )
        if target is None:
            continue
        fields = {name: str(entry.get(name) or "") for name in FIELDS}
        fields["line"] = mask(fields["line"][:MAX_LINE], secrets[target.service_id])
        pipe.xadd(stream_key(target.id), fields, maxlen=MAX_ENTRIES, approximate=False)  # type: ignore[arg-type]
        stored += 1
    pipe.execute()
    return stored


def _entry(entry_id: bytes | str, fields: dict[Any, Any]) -> dict[str, Any]:
    decoded = {redis_text(k): redis_text(v) for k, v in fields.items()}
    return {"id": redis_text(entry_id), **{name: decoded.get(name, "") for name in FIELDS}}


def since_id(since: dt.datetime | None) -> str:
    """The first stream id received at or after ``since`` (ids are Redis's clock, ms)."""
    if since is None:
        return "-"
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    return f"{int(since.timestamp() * 1000)}-0"


def read(
    redis: Redis,
    environment_id: int,
    *,
    since: dt.datetime | None = None,
    tail: int | None = None,
    service: str | None = None,
) -> list[dict[str, Any]]:
    """The stored lines, oldest first: received since ``since``, of ``service`` only
    (a compose service's name), the last ``tail`` of them."""
    raw: Any = redis.xrange(stream_key(environment_id), min=since_id(since), max="+")
    lines = [_entry(entry_id, fields) for entry_id, fields in raw]
    if service:
        lines = [line for line in lines if line["service"] == service]
    return lines[-tail:] if tail else lines


def events(
    streams: logstream.LogStreams,
    environment_id: int,
    after: str | None,
    service: str | None = None,
) -> Iterator[str]:
    """The environment's lines as server-sent events, from after ``after`` (a
    ``Last-Event-ID``) or from now on; a keep-alive comment each quiet interval. The
    stream ends when the environment is gone."""
    last = after if after and logstream.readable_id(after) else _newest(streams, environment_id)
    yield ": stream open\n\n"
    block_ms = int(streams.keepalive_seconds * 1000)
    while True:
        batches: Any = streams.redis.xread(
            {stream_key(environment_id): last}, block=block_ms, count=500
        )
        if not batches:
            if not _exists(streams, environment_id):
                yield logstream.event({"status": "removed"}, "end")
                return
            yield logstream.KEEPALIVE
            continue
        for entry_id, fields in batches[0][1]:
            line = _entry(entry_id, fields)
            last = line["id"]
            if not service or line["service"] == service:
                yield logstream.event(line, entry_id=last)


def _newest(streams: logstream.LogStreams, environment_id: int) -> str:
    """The id of the newest stored line (a follower starts after it), "0-0" if none."""
    newest: Any = streams.redis.xrevrange(stream_key(environment_id), count=1)
    return redis_text(newest[0][0]) if newest else logstream.START


def _exists(streams: logstream.LogStreams, environment_id: int) -> bool:
    session = streams.database.new_session()
    try:
        return session.get(Environment, environment_id) is not None
    finally:
        session.close()
