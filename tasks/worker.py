"""Process entry for Celery workers, beat and Flower: configure, register tasks, start."""

from __future__ import annotations

from controlplane.settings import Settings
from tasks.app import BUILDS_QUEUE, configure, node_queue


def build_queues(node_name: str) -> list[str]:
    """A build worker takes first steps from the shared queue, later ones from its own."""
    return [BUILDS_QUEUE, node_queue(node_name)]


def run(settings: Settings, argv: list[str]) -> None:
    celery_app = configure(settings)
    import tasks.build
    import tasks.control  # noqa: F401 - importing registers the tasks

    celery_app.start(argv)
