"""Process entry for the control plane's Celery processes: control workers, beat and
Flower (a build host starts with :mod:`tasks.buildmain` instead)."""

from __future__ import annotations

from controlplane.settings import Settings
from tasks import process
from tasks.app import celery_app
from tasks.pipeline import configure_sender


def run(settings: Settings, argv: list[str]) -> int:
    """Run the Celery command ``argv`` with the control tasks registered; its exit status."""
    configure_sender(settings)
    import tasks.control  # noqa: F401 - importing registers the tasks

    return process.run(celery_app, argv)
