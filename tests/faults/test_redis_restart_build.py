"""Redis restarted (and emptied, as a crash would) while a build runs: the build still ends
once, succeeded, and exactly one deployment of it becomes active."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from sqlalchemy import select

from controlplane.models import Build, Deployment, Host
from tasks import pipeline
from tests.fixtures.processes import Workers, wait_until
from tests.fixtures.servers import RedisServer
from tests.fixtures.stack import Stack, wait_for
from tests.hostagent.test_agent_e2e import deployment_status, serving
from tests.tasks.test_pipeline_e2e import build_of, finished, install, push, steps_of

pytestmark = [pytest.mark.faults, pytest.mark.docker, pytest.mark.slow]

# Agents of other test runs may share the Docker engine: a host name of this test's own.
HOST = f"redis-restart-{secrets.token_hex(4)}"
OUTAGE_SECONDS = 3.0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(private_redis: RedisServer) -> str:
    """The web, control worker, build worker and beat all use the private Redis."""
    return private_redis.url


def test_a_build_survives_a_redis_restart(
    stack: Stack,
    base_image: str,
    private_redis: RedisServer,
    docker_client: docker.DockerClient,
    registry: Any,
    docker_cleanup: None,
) -> None:
    install(stack, base_image)
    with stack.database.session_scope() as session:
        (host,) = session.scalars(select(Host))
        host.name = HOST
    stack.start_beat()
    stack.start_buildworker("build-redis-restart")
    stack.start_agent(HOST)
    sha = push(
        stack,
        {
            "Dockerfile": f"FROM {base_image}\nRUN sleep 6\nCOPY index.html /www/index.html\n"
            'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n',
            "index.html": "built across a redis restart\n",
        },
        1_700_030_000,
    )

    def building() -> bool:
        build = build_of(stack, sha)
        return bool(build) and any(
            s.name == "build" and s.status == "running"
            for s in steps_of(stack, build.id)  # type: ignore[union-attr]
        )

    wait_for(building, 120, 0.2, "the build step to start")
    private_redis.stop()
    time.sleep(OUTAGE_SECONDS)  # the outage itself; nothing is measured
    private_redis.start()

    def finished_while_all_run() -> Build | None:
        for worker in stack.workers.started:
            if not worker.running():
                pytest.fail(
                    f"{worker.name} exited with {worker.process.returncode} after the Redis "
                    f"restart:\n{worker.log()[-6000:]}"
                )
        return finished(stack, sha)

    done = wait_for(finished_while_all_run, 120, 0.5, "the build to finish")
    assert done.status == "succeeded", done.error
    wait_for(
        lambda: serving(stack, "built across a redis restart"), 120, 0.5, "the version to serve"
    )
    wait_for(lambda: deployment_status(stack, sha) == "active", 60, 0.5, "activation")
    with stack.database.session_scope() as session:
        builds = [(b.commit_sha, b.status) for b in session.scalars(select(Build))]
        deployments = [(d.build.commit_sha, d.status) for d in session.scalars(select(Deployment))]
    assert builds == [(sha, "succeeded")]
    assert deployments == [(sha, "active")]
    assert len(running_on(docker_client, HOST)) == 1


def running_on(client: docker.DockerClient, host: str) -> list[Any]:
    """Running containers this test's agent started (other runs may share the engine)."""
    running: list[Any] = client.containers.list(filters={"label": f"io.portside.host={host}"})
    return running


def test_the_control_worker_outlives_a_redis_restart(
    private_redis: RedisServer, worker_processes: Workers
) -> None:
    """An idle control worker reconnects."""
    worker = worker_processes.control()
    private_redis.stop()
    time.sleep(OUTAGE_SECONDS)
    private_redis.start()
    worker_processes.wait_ready(worker)


def test_a_control_worker_holding_a_message_outlives_a_redis_restart(
    private_redis: RedisServer, worker_processes: Workers
) -> None:
    """A control worker holding a message (here one due in ten minutes, as a retried GitHub
    status is) reconnects too: Celery 5.7 alone stops it ("Unrecoverable error"), see
    tasks.process.Consumer. Asked to stop afterwards, it stops cleanly."""
    worker = worker_processes.control()
    held = worker_processes.celery.send_task(pipeline.REDRIVE_DELIVERIES, countdown=600)
    wait_until(lambda: f"{held.id}] received" in worker.log(), "the worker to hold the message")
    private_redis.stop()
    time.sleep(OUTAGE_SECONDS)
    private_redis.start()
    worker_processes.wait_ready(worker)
    worker.stop()
    assert worker.process.returncode == 0, worker.log()[-6000:]
