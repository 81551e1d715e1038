"""Process entry for Celery workers, beat and Flower: configure, register tasks, start."""

from __future__ import annotations

from controlplane.settings import Settings
from tasks.app import BUILDS_QUEUE, configure, node_queue


def build_queues(node_name: str) -> list[str]:
    """A build worker takes first steps from the shared queue, later ones from its own;
    its own comes first, and the broker is told to keep that order (tasks.app), so a
    worker finishes the build it started before it takes the next one."""
    return [node_queue(node_name), BUILDS_QUEUE]


def run(settings: Settings, argv: list[str]) -> None:
    celery_app = configure(settings)
    import tasks.build
    import tasks.control  # noqa: F401 - importing registers the tasks

    celery_app.start(argv)
