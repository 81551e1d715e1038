"""Starting a Celery process of either side (control plane or build host): the checks a
person can act on before it starts, a consumer that survives broker restarts, and
Celery's own exit status. Nothing here imports the control plane."""

from __future__ import annotations

from typing import Any

import docker
from celery import Celery
from celery.bin.celery import celery as celery_command
from celery.worker.consumer import Consumer as CeleryConsumer
from click import ClickException
from docker.errors import DockerException
from redis import Redis
from redis.exceptions import RedisError

from contracts.environ import mask_url


def broker_refusal(redis_url: str) -> str | None:
    """Why the broker cannot be used (one line naming it), or None when it answers."""
    try:
        Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except RedisError as exc:
        return f"Redis at {mask_url(redis_url)} is unavailable: {exc}"
    return None


def docker_engine_answers() -> bool:
    """Whether a build worker or an agent can work here (both need a Docker engine)."""
    try:
        client = docker.from_env(timeout=3)
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except DockerException:
        return False
    finally:
        client.close()


class Consumer(CeleryConsumer):  # type: ignore[misc]  # Celery is untyped
    """Celery's consumer, made to reconnect after a broker restart even while it holds an
    unacknowledged message (a task with a countdown, a running acks_late task).

    Celery 5.7 first collects the lost connection, which releases its transport but leaves
    its channel open, then closes it: closing the channel restores the unacknowledged
    messages through the released transport, raises AttributeError and stops the worker
    ("Unrecoverable error"). Here the lost connection is only closed, which does all that
    collecting does and keeps the transport until its channel is closed; a restore that
    fails on the broken connection is a connection error the close ignores, and Redis's
    visibility timeout restores those messages as after any lost connection.
    """

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection = self.connection
        if connection is not None:
            connection.collect = _closed_later
        super().on_connection_error_after_connected(exc)


def _closed_later(socket_timeout: float | None = None) -> None:
    """Stands in for ``Connection.collect`` on a lost connection that is closed next."""


def run(app: Celery, argv: list[str]) -> int:
    """Run the Celery command ``argv`` on the configured ``app``; its exit status, which
    ``Celery.start`` drops (a worker stopped by an unrecoverable error would otherwise
    exit 0, and a supervisor that restarts on failure would leave it down)."""
    celery_command.params[0].default = app  # the --app option, as Celery.start does
    try:
        status: Any = celery_command.main(args=argv, standalone_mode=False)
    except ClickException as exc:  # what Celery's own command line prints and exits with
        exc.show()
        return exc.exit_code
    finally:
        celery_command.params[0].default = None
    return status if isinstance(status, int) else 0
