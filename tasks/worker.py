"""Process entry for Celery workers, beat and Flower: configure, register tasks, start."""

from __future__ import annotations

from typing import Any

from celery.bin.celery import celery as celery_command
from celery.worker.consumer import Consumer as CeleryConsumer
from click import ClickException

from controlplane.settings import Settings
from tasks.app import BUILDS_QUEUE, UNTRUSTED_BUILDS_QUEUE, configure, node_queue


def build_queues(node_name: str, untrusted: str = "no") -> list[str]:
    """A build worker takes first steps from the shared queues, later ones from its own;
    its own comes first, and the broker is told to keep that order (tasks.app), so a
    worker finishes the build it started before it takes the next one.

    Which shared queues follow ``untrusted`` (PORTSIDE_BUILD_UNTRUSTED): ``no`` reads
    trusted builds only, ``only`` forks' builds only, ``yes`` both.
    """
    shared = {
        "no": [BUILDS_QUEUE],
        "only": [UNTRUSTED_BUILDS_QUEUE],
        "yes": [BUILDS_QUEUE, UNTRUSTED_BUILDS_QUEUE],
    }
    if untrusted not in shared:
        raise ValueError(f"PORTSIDE_BUILD_UNTRUSTED must be no, only or yes, got {untrusted!r}")
    return [node_queue(node_name), *shared[untrusted]]


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


def run(settings: Settings, argv: list[str]) -> int:
    """Run the Celery command ``argv``; its exit status, which ``Celery.start`` drops
    (a worker stopped by an unrecoverable error would otherwise exit 0, and a supervisor
    that restarts on failure would leave it down)."""
    celery_app = configure(settings)
    import tasks.build
    import tasks.control  # noqa: F401 - importing registers the tasks

    celery_command.params[0].default = celery_app  # the --app option, as Celery.start does
    try:
        status: Any = celery_command.main(args=argv, standalone_mode=False)
    except ClickException as exc:  # what Celery's own command line prints and exits with
        exc.show()
        return exc.exit_code
    finally:
        celery_command.params[0].default = None
    return status if isinstance(status, int) else 0
