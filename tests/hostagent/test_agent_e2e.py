"""End to end with the agent: a pushed commit runs on this machine, the next push replaces
it only after it is healthy, and drift made by hand is repaired."""

from __future__ import annotations

import time
from typing import Any

import docker
import pytest
import requests
from sqlalchemy import select

from controlplane.models import Deployment, Environment
from tests.fixtures.stack import Stack, wait_for
from tests.tasks.test_pipeline_e2e import finished, install, push

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def environment(stack: Stack) -> Environment | None:
    with stack.database.session_scope() as session:
        return session.scalar(select(Environment).where(Environment.name == "hello"))


def serving(stack: Stack, text: str) -> str | None:
    """The address of the environment when it answers with ``text``."""
    env = environment(stack)
    if env is None or not env.address:
        return None
    try:
        body = requests.get(f"http://{env.address}/", timeout=2).text
    except requests.RequestException:
        return None
    return env.address if text in body else None


def deployment_status(stack: Stack, sha: str) -> str | None:
    with stack.database.session_scope() as session:
        for deployment in session.scalars(select(Deployment)):
            if deployment.build.commit_sha == sha:
                return deployment.status
    return None


def containers_of(client: docker.DockerClient) -> list[Any]:
    # This test's host only: other tests' agents (other host names) may have left theirs.
    labels = ["io.portside.environment=hello", "io.portside.host=web-1"]
    return client.containers.list(all=True, filters={"label": labels})


def test_agent_runs_replaces_and_repairs(
    stack: Stack,
    base_image: str,
    docker_client: docker.DockerClient,
    registry: Any,
    docker_cleanup: None,
) -> None:
    install(stack, base_image)
    stack.start_buildworker("build-agent")
    stack.start_agent("web-1")
    first = push(stack, {"index.html": "first version\n"}, 1_700_001_000)
    assert wait_for(lambda: finished(stack, first), 300, 0.5).status == "succeeded"
    wait_for(lambda: serving(stack, "first version"), 120, 0.5, "the first version to serve")
    wait_for(lambda: deployment_status(stack, first) == "active", 60, 0.5, "activation")

    since = int(time.time()) - 1
    second = push(stack, {"index.html": "second version\n"}, 1_700_001_100)
    assert wait_for(lambda: finished(stack, second), 300, 0.5).status == "succeeded"
    wait_for(lambda: serving(stack, "second version"), 120, 0.5, "the second version to serve")
    wait_for(lambda: deployment_status(stack, second) == "active", 60, 0.5, "activation")
    assert deployment_status(stack, first) == "superseded"

    # Zero downtime: the new container started before the old one was stopped.
    events = docker_client.events(
        since=since,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "label": "io.portside.environment=hello"},
    )
    order = [(e["Action"], e["Actor"]["Attributes"].get("io.portside.deployment")) for e in events]
    starts = [i for i, (action, _) in enumerate(order) if action == "start"]
    stops = [i for i, (action, _) in enumerate(order) if action in ("stop", "kill", "die")]
    assert starts and stops and starts[0] < stops[0], order

    # Drift: a container removed by hand is back; one without Portside's labels is left alone.
    stranger = docker_client.containers.run(
        base_image, ["sleep", "300"], detach=True, labels={"io.portside.test": "1"}
    )
    (running,) = [c for c in containers_of(docker_client) if c.status == "running"]
    running.remove(force=True)
    wait_for(lambda: serving(stack, "second version"), 60, 0.5, "the repaired container")
    stranger.reload()
    assert stranger.status == "running"
    stranger.remove(force=True)


def test_a_bad_image_leaves_the_previous_version_serving(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    install(stack, base_image)
    stack.start_buildworker("build-bad")
    stack.start_agent("web-1")
    good = push(stack, {"index.html": "good version\n"}, 1_700_002_000)
    assert wait_for(lambda: finished(stack, good), 300, 0.5).status == "succeeded"
    wait_for(lambda: deployment_status(stack, good) == "active", 120, 0.5, "the good version")
    bad = push(
        stack,
        {"Dockerfile": f'FROM {base_image}\nCMD ["sh", "-c", "echo cannot start; exit 3"]\n'},
        1_700_002_100,
    )
    assert wait_for(lambda: finished(stack, bad), 300, 0.5).status == "succeeded"
    wait_for(lambda: deployment_status(stack, bad) == "failed", 120, 0.5, "the failure report")
    with stack.database.session_scope() as session:
        failed = next(d for d in session.scalars(select(Deployment)) if d.build.commit_sha == bad)
        assert "cannot start" in (failed.error or "")
    assert serving(stack, "good version")
    current = environment(stack)
    assert current is not None and current.status == "running"
