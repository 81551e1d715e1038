"""``tasks.worker.run`` exits with Celery's status: a worker stopped by an unrecoverable
error must not exit 0, or a supervisor restarting on failure leaves it down."""

from __future__ import annotations

import subprocess
import sys

from controlplane.settings import Settings
from tests.fixtures.processes import worker_environment

# A worker whose consumer fails to start with an error Celery cannot recover from.
FAILING_WORKER = """
import os, sys
from celery import bootsteps
from controlplane.settings import Settings
from tasks import worker
from tasks.app import celery_app

class Fails(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c):
        raise RuntimeError("the consumer cannot start")

celery_app.steps["consumer"].add(Fails)
argv = ["worker", "-P", "solo", "-Q", "control", "-n", "exits@%h", "--without-mingle"]
sys.exit(worker.run(Settings.from_env(os.environ), argv))
"""


def run_worker(settings: Settings, script: str) -> tuple[int, str]:
    """Run ``script`` as a worker process with the test's settings: its status and output."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=worker_environment(settings),
        capture_output=True,
        timeout=120,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def test_a_worker_stopped_by_an_unrecoverable_error_exits_non_zero(settings: Settings) -> None:
    status, output = run_worker(settings, FAILING_WORKER)
    assert "Unrecoverable error: RuntimeError('the consumer cannot start')" in output, output
    assert status == 1, output


def test_a_usage_error_exits_with_celery_s_usage_status(settings: Settings) -> None:
    status, output = run_worker(settings, FAILING_WORKER.replace('"solo"', '"no-such-pool"'))
    assert "no-such-pool" in output, output
    assert status == 2, output
