"""The registry down during the push step: the step is tried again with backoff; a registry
back in time lets the build succeed, one that stays away fails it with an error naming it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from controlplane.models import Build, Deployment
from tasks.build import MAX_RETRIES
from tests.fixtures.docker import Registry
from tests.fixtures.servers import RegistryServer
from tests.fixtures.stack import Stack, wait_for
from tests.tasks.test_pipeline_e2e import finished, install, push, stack_read_headers

pytestmark = [pytest.mark.faults, pytest.mark.docker, pytest.mark.slow]

IMAGE_PATH = "codertocat/hello-world"


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    directory = tmp_path / "registry"
    directory.mkdir()
    server = RegistryServer(directory)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def registry(private_registry: RegistryServer) -> Iterator[Registry]:
    """The stack pushes to the private registry, which this module stops and starts."""
    client = Registry(host=private_registry.host)
    yield client
    client.close()


def build_log(stack: Stack, build_id: int) -> list[str]:
    response = requests.get(
        f"{stack.url}/v1/builds/{build_id}/logs", headers=stack_read_headers(stack), timeout=10
    )
    response.raise_for_status()
    lines: list[str] = response.json()["lines"]
    return lines


def build_id_of(stack: Stack, sha: str) -> int | None:
    with stack.database.session_scope() as session:
        return session.scalar(select(Build.id).where(Build.commit_sha == sha))


def push_failures(lines: list[str], host: str) -> int:
    return sum(1 for line in lines if line.startswith("ERROR:") and host in line)


def outcome(stack: Stack) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Every build (commit, status) and every deployment (commit, status) recorded."""
    with stack.database.session_scope() as session:
        builds = [(b.commit_sha, b.status) for b in session.scalars(select(Build))]
        deployments = [(d.build.commit_sha, d.status) for d in session.scalars(select(Deployment))]
    return builds, deployments


def test_a_registry_back_within_the_retries_lets_the_build_succeed(
    stack: Stack,
    base_image: str,
    private_registry: RegistryServer,
    registry: Registry,
    docker_cleanup: None,
) -> None:
    install(stack, base_image)
    private_registry.stop()
    stack.start_buildworker("build-registry-back")
    sha = push(stack, {"index.html": "pushed late\n"}, 1_700_010_000)
    build_id = wait_for(lambda: build_id_of(stack, sha), 60, what="the build row")

    wait_for(
        lambda: push_failures(build_log(stack, build_id), registry.host) >= 1,
        120,
        0.5,
        "a failed push to the stopped registry",
    )
    private_registry.start()

    done = wait_for(lambda: finished(stack, sha), 120, 0.5, "the build to finish")
    assert done.status == "succeeded", done.error
    assert done.attempt == 1
    lines = build_log(stack, build_id)
    assert sum(1 for line in lines if line.startswith("==> push")) >= 2
    image = done.images["app"]
    assert registry.manifest_digest(IMAGE_PATH, image["tag"]) == image["digest"]
    builds, deployments = outcome(stack)
    assert builds == [(sha, "succeeded")]
    assert [commit for commit, _status in deployments] == [sha]


def test_a_registry_that_stays_down_fails_the_build_naming_it(
    stack: Stack,
    base_image: str,
    private_registry: RegistryServer,
    registry: Registry,
    docker_cleanup: None,
) -> None:
    install(stack, base_image)
    private_registry.stop()
    stack.start_buildworker("build-registry-down")
    sha = push(stack, {"index.html": "never pushed\n"}, 1_700_010_100)

    done = wait_for(lambda: finished(stack, sha), 180, 0.5, "the build to give up")
    assert done.status == "failed"
    error: Any = done.error
    assert "push gave up after retries" in error
    assert f"registry {registry.host}" in error
    lines = build_log(stack, done.id)
    # The first try and every retry, each refused by the absent registry.
    assert sum(1 for line in lines if line.startswith("==> push")) == MAX_RETRIES + 1
    assert push_failures(lines, registry.host) == MAX_RETRIES + 1
    with stack.database.session_scope() as session:
        steps = [(s.name, s.status) for s in session.get(Build, done.id).steps]  # type: ignore[union-attr]
    assert steps[:3] == [("clone", "succeeded"), ("build", "succeeded"), ("push", "failed")]
    builds, deployments = outcome(stack)
    assert builds == [(sha, "failed")]
    assert deployments == []
    private_registry.start()
    assert registry.list_tags(IMAGE_PATH) == []
