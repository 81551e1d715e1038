"""End to end: the newest commit of a branch is the one deployed, by ancestry, and a
build superseded while its ``docker build`` runs is stopped, container, workspace and
all, by the real Celery workers, Docker engine, registry and git over HTTP."""

from __future__ import annotations

import copy
import re
import threading
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import redis
from sqlalchemy import select

from buildworker.api import ControlPlane
from buildworker.errors import BuildStopped
from buildworker.runner import StepRunner, WorkerConfig
from buildworker.steplog import HEARTBEAT_SECONDS
from controlplane.models import Deployment, Environment
from controlplane.services import logs
from tests.fixtures.stack import Stack, wait_for
from tests.helpers import json_payload
from tests.tasks.test_pipeline_e2e import (
    INSTALLATION,
    REPOSITORY,
    build_of,
    finished,
    install,
    post_delivery,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SAME_SECOND = 1_700_000_000
# The Done-when of issue 15: a superseded build stops within this long of the newer push.
STOPS_WITHIN = 10.0


def commit(stack: Stack, files: dict[str, str]) -> str:
    return stack.github.state.commit(REPOSITORY, files, branch="master")


def deliver_push(stack: Stack, sha: str, before: str) -> None:
    """GitHub's push delivery of ``sha`` onto ``before``, pushed in SAME_SECOND."""
    payload = copy.deepcopy(json_payload("push__with-new-branch.payload.json"))
    payload["installation"]["id"] = INSTALLATION
    payload["repository"].update(
        {
            key: value
            for key, value in stack.github.repository_json(REPOSITORY).items()
            if key in ("id", "clone_url", "full_name", "name")
        }
    )
    payload["repository"]["pushed_at"] = SAME_SECOND
    payload.update(after=sha, before=before, created=False, forced=False, commits=[])
    payload["head_commit"]["id"] = sha
    post_delivery(stack, "push", payload)


def deployed_commit(stack: Stack) -> str | None:
    with stack.database.session_scope() as session:
        environment = session.scalar(select(Environment).where(Environment.kind == "production"))
        current = environment.current_deployment if environment else None
        return current.build.commit_sha if current else None


def delete_images(stack: Stack, registry: Any, *shas: str) -> None:
    for sha in shas:
        build = build_of(stack, sha)
        for image in (build.images or {}).values() if build else ():
            registry.delete_image(image["repository"].split("/", 1)[1], image["tag"])


def test_a_child_delivered_before_its_parent_in_the_same_second_is_deployed(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    install(stack, base_image)
    start = commit(stack, {"index.html": "start\n"})
    parent = commit(stack, {"index.html": "parent\n"})
    child = commit(stack, {"index.html": "child\n"})
    deliver_push(stack, child, before=parent)
    wait_for(lambda: build_of(stack, child), 60, what="the child's build")
    deliver_push(stack, parent, before=start)
    stack.start_buildworker("build-order")
    assert wait_for(lambda: finished(stack, child), 300, 0.5).status == "succeeded"
    assert deployed_commit(stack) == child
    assert build_of(stack, parent) is None
    with stack.database.session_scope() as session:
        deployed = [d.build.commit_sha for d in session.scalars(select(Deployment))]
    assert deployed == [child]
    delete_images(stack, registry, child)


def test_a_build_superseded_mid_docker_build_stops_and_the_newer_one_deploys(
    stack: Stack,
    base_image: str,
    registry: Any,
    docker_client: docker.DockerClient,
    docker_cleanup: None,
) -> None:
    # Build ids restart at 1 in every test database: only images made during this test
    # can be the stopped build's.
    images_before = {image.id for image in docker_client.images.list(all=True)}
    install(stack, base_image)
    start = commit(stack, {"index.html": "start\n"})
    slow = commit(stack, {"Dockerfile": f"FROM {base_image}\nRUN sleep 60\n"})
    deliver_push(stack, slow, before=start)
    stack.start_buildworker("build-stop")
    store = redis.Redis.from_url(stack.settings.redis_url)
    building = wait_for(lambda: build_of(stack, slow), 60, what="the slow build")

    def step_container() -> str | None:
        for _entry, line in logs.read(store, building.id):
            if found := re.search(r"Running in ([0-9a-f]{12,64})", line or ""):
                return found.group(1)
        return None

    container = wait_for(step_container, 120, what="the slow build's RUN step")
    assert docker_client.api.inspect_container(container)["State"]["Running"]
    workspace = stack.settings.data_dir / "buildworker" / "workspaces" / f"build-{building.id}-1"
    assert workspace.is_dir()

    newer = commit(stack, {"Dockerfile": f"FROM {base_image}\nCOPY index.html /www/index.html\n"})
    deliver_push(stack, newer, before=slow)

    def container_gone() -> bool:
        try:
            docker_client.api.inspect_container(container)
        except docker.errors.NotFound:
            return True
        return False

    wait_for(container_gone, STOPS_WITHIN, what="the superseded build's container to go")
    stopped = wait_for(lambda: finished(stack, slow), 10)
    assert stopped.status == "cancelled" and f"of {newer[:7]}" in (stopped.error or "")
    wait_for(lambda: not workspace.exists(), 10, what="the superseded build's workspace to go")
    wait_for(
        lambda: any(
            "stopped on build-stop" in (line or "") for _e, line in logs.read(store, building.id)
        ),
        10,
        what="the worker to log the stop",
    )
    label = f"io.portside.build={building.id}"
    made = docker_client.images.list(all=True, filters={"label": label})
    assert [image.tags for image in made if image.id not in images_before] == []

    assert wait_for(lambda: finished(stack, newer), 300, 0.5).status == "succeeded"
    assert deployed_commit(stack) == newer
    delete_images(stack, registry, newer)


def test_without_the_stop_key_the_heartbeat_stops_the_build(
    stack: Stack,
    base_image: str,
    registry: Any,
    docker_client: docker.DockerClient,
    docker_cleanup: None,
    tmp_path: Path,
) -> None:
    """The backstop: a worker that never sees the Redis key (as if Redis had lost it)
    stops at its next heartbeat, answered 409 once the build is cancelled."""
    install(stack, base_image)
    start = commit(stack, {"index.html": "start\n"})
    slow = commit(stack, {"Dockerfile": f"FROM {base_image}\nRUN sleep 60\n"})
    deliver_push(stack, slow, before=start)
    building = wait_for(lambda: build_of(stack, slow), 60, what="the slow build")
    lines: list[str] = []
    runner = StepRunner(
        ControlPlane(stack.url, stack.worker_env["PORTSIDE_TOKEN"], allow_insecure=True),
        docker_client,
        WorkerConfig(node="build-deaf", registry=registry.host, workspace_root=tmp_path),
        lambda _build_id, more: lines.extend(more),
    )
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            runner.run("clone", building.id, 1)
            runner.run("build", building.id, 1)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    running = wait_for(
        lambda: next((m for line in lines if (m := re.search(r"Running in (\w+)", line))), None),
        120,
        what="the slow build's RUN step",
    )
    newer = commit(stack, {"index.html": "newer\n"})
    deliver_push(stack, newer, before=slow)
    assert wait_for(lambda: finished(stack, slow), 30).status == "cancelled"
    worker.join(timeout=HEARTBEAT_SECONDS + 10)  # its next heartbeat, and the stop
    assert len(outcome) == 1 and isinstance(outcome[0], BuildStopped), outcome
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(running.group(1))
    assert not runner.workspace(building.id, 1).exists()
    assert any(line.startswith("stopped on build-deaf") for line in lines)
