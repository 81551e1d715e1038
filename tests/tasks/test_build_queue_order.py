"""A build worker takes from its own queue (the next step of the build it started) before
the shared one: a real ``portside buildworker`` process and real Redis."""

from __future__ import annotations

import pytest
from celery import Celery

from tasks.app import BUILDS_QUEUE, node_queue
from tasks.build import WORKER_INFO
from tests.fixtures.processes import Workers

pytestmark = pytest.mark.slow

NAME = "build-order"
DEADLINE = 60.0


def test_a_build_worker_empties_its_own_queue_before_taking_from_the_shared_one(
    celery_client: Celery, worker_processes: Workers
) -> None:
    # Both queues hold messages before the worker starts, as when a step ends and the
    # next build waits in the shared queue. Round robin between queues would alternate.
    shared = [celery_client.send_task(WORKER_INFO, queue=BUILDS_QUEUE) for _ in range(3)]
    own = [celery_client.send_task(WORKER_INFO, queue=node_queue(NAME)) for _ in range(3)]

    worker_processes.build(NAME)

    for result in shared + own:
        result.get(timeout=DEADLINE)
    assert max(r.date_done for r in own) < min(r.date_done for r in shared)
