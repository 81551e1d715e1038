"""Process entry for Celery workers, beat and Flower: configure, register tasks, start."""

from __future__ import annotations

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


def run(settings: Settings, argv: list[str]) -> None:
    celery_app = configure(settings)
    import tasks.build
    import tasks.control  # noqa: F401 - importing registers the tasks

    celery_app.start(argv)
