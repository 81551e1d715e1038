"""Host generations: the version of each host's desired state and how agents hear of it.

Every change of what a host should run bumps its generation in the same transaction
(:func:`bump`); after the commit the new generation is written to Redis and published on
the host's wake-up channel (:func:`announce`), so a long-polling agent hears of it at
once and an agent that is up to date is answered 304 without the database.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Collection

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from controlplane.models import Environment, Host
from controlplane.services import placements

log = logging.getLogger(__name__)

GENERATION_TTL = 30  # seconds; bounds how long a stale cached generation can live
CHANGED_HOSTS = "portside.changed_hosts"


def generation_key(host_id: int) -> str:
    return f"portside:host:{host_id}:generation"


_WAKE_CHANNEL_FORMAT = "portside:host:{}:wake"
# Every host's wake channel, for one pattern subscription per web process.
WAKE_PATTERN = _WAKE_CHANNEL_FORMAT.format("*")


def wake_channel(host_id: int) -> str:
    return _WAKE_CHANNEL_FORMAT.format(host_id)


_WAKE_CHANNEL = re.compile(r"portside:host:(\d+):wake")


def host_of_wake_channel(channel: str) -> int | None:
    matched = _WAKE_CHANNEL.fullmatch(channel)
    return int(matched.group(1)) if matched else None


def bump(session: Session, host_id: int) -> None:
    """Advance a host's generation; announced to its agent after the commit."""
    bump_hosts(session, [host_id])


def bump_hosts(session: Session, host_ids: Collection[int]) -> None:
    """Advance the generations of ``host_ids`` in one statement (a fleet-wide deployment
    is one UPDATE, not one per host); announced together after the commit."""
    if not host_ids:
        return
    session.execute(
        update(Host).where(Host.id.in_(host_ids)).values(generation=Host.generation + 1)
    )
    session.info.setdefault(CHANGED_HOSTS, set()).update(host_ids)


def bump_environment(session: Session, environment: Environment) -> None:
    """Advance the generation of every host ``environment`` runs on."""
    bump_hosts(session, placements.host_ids(environment))


def announcer(engine: Engine, redis: Redis) -> Callable[[Session], None]:
    """An after-commit hook announcing the generations a transaction bumped."""

    def announce_committed(session: Session) -> None:
        announce(engine, redis, session.info.pop(CHANGED_HOSTS, set()))

    return announce_committed


# Caches of generations in this process, told of its own announcements at once (others
# hear them through Redis): an agent that asks the process that committed a change
# sees it, whatever the subscription's delay.
_local_caches: set[Callable[[Collection[int]], None]] = set()


def tell_on_announce(forget: Callable[[Collection[int]], None]) -> None:
    _local_caches.add(forget)


def stop_telling(forget: Callable[[Collection[int]], None]) -> None:
    _local_caches.discard(forget)


def announce(engine: Engine, redis: Redis, host_ids: set[int]) -> None:
    """Write the committed generations to Redis and wake the agents (best effort)."""
    if not host_ids:
        return
    with engine.connect() as connection:
        rows = connection.execute(
            select(Host.id, Host.generation).where(Host.id.in_(host_ids))
        ).all()
    try:
        pipe = redis.pipeline(transaction=False)
        for host_id, generation in rows:
            pipe.set(generation_key(host_id), generation, ex=GENERATION_TTL)
            pipe.publish(wake_channel(host_id), generation)
        pipe.execute()
    except RedisError as exc:  # agents still converge on their next tick
        log.warning("could not announce new generations: %s", exc)
    for forget in list(_local_caches):  # after Redis holds the new generations
        forget(host_ids)


def cached_generation(redis: Redis, host_id: int) -> int | None:
    try:
        value = redis.get(generation_key(host_id))
    except RedisError:
        return None
    return int(value) if value is not None else None


def remember_generation(redis: Redis, host_id: int, generation: int) -> None:
    with contextlib.suppress(RedisError):  # the cache is an optimisation only
        redis.set(generation_key(host_id), generation, ex=GENERATION_TTL, nx=True)
