"""The composition root: a process's database handle wired to what follows its commits.

The web app, the CLI's database commands and each control worker open their database
here, so every process announces new generations, forgets revoked tokens and asks for
stops the same way after a commit (best effort; what must not be lost is written to the
outbox in the transaction itself, :mod:`~controlplane.services.effects`).
"""

from __future__ import annotations

from redis import BlockingConnectionPool, Redis

from controlplane.db import Database
from controlplane.services import generations, stops, tokens
from controlplane.settings import Settings

REDIS_CONNECTIONS = 64  # per process


def open_database(settings: Settings) -> tuple[Database, Redis]:
    """A process's database handle that, after each commit, announces new generations,
    forgets revoked tokens in Redis and asks running builds to stop."""
    database = Database(settings)
    # A web process runs hundreds of threads: past the pool's size they wait their turn
    # (redis-py's default pool raises "Too many connections" instead).
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=REDIS_CONNECTIONS,
        timeout=5,
        socket_connect_timeout=2,
        socket_timeout=5,
    )
    redis = Redis(connection_pool=pool)
    database.after_commit(generations.announcer(database.engine, redis))
    database.after_commit(tokens.forgetter(redis))
    database.after_commit(stops.requester(redis))
    return database, redis
