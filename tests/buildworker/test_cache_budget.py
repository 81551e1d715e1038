"""The build worker's images stay under PORTSIDE_BUILD_CACHE_MAX once a build ends on it:
the oldest go first; an image a container uses, one a build still running on the worker
made, and images that are not the worker's (unlabelled, or named outside its registry)
stay, whatever their age."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import docker
import pytest

from buildworker import images
from buildworker.api import ControlPlane
from buildworker.runner import StepRunner, WorkerConfig
from tests.fixtures.docker import TEST_LABELS, Registry

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_cleanup")]

# Nothing listens there: pruning never needs the control plane.
NO_CONTROL_PLANE = "http://127.0.0.1:9"


def _build(
    client: docker.DockerClient, tmp_path: Path, base: str, tag: str, labels: dict[str, str]
) -> str:
    """An image of ``base`` plus 200 KB of its own; its id."""
    context = tmp_path / uuid.uuid4().hex
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN head -c 200000 /dev/urandom > /blob\n")
    return images.build_image(client, context, "Dockerfile", tag, labels, {}, print)


def _usage(client: docker.DockerClient, registry: str) -> int:
    """What the budget counts of the worker's images: each one's whole size."""
    return sum(
        int(image["Size"])
        for image in client.api.images(filters={"label": images.BUILD_LABEL})
        if any(
            str(name).startswith(f"{registry}/")
            for name in (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
        )
    )


def test_after_a_build_the_oldest_images_go_until_under_the_budget(
    docker_client: docker.DockerClient, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    # A registry prefix of this test's own: only its images are the worker's.
    worker_registry = f"{registry.host}/budget-{uuid.uuid4().hex[:8]}"
    repository = f"{worker_registry}/o/app"
    built = {}
    for build_id in range(1, 6):
        labels = {images.BUILD_LABEL: str(build_id), **TEST_LABELS}
        built[build_id] = _build(
            docker_client, tmp_path, base_image, f"{repository}:b{build_id}", labels
        )
        time.sleep(1.1)  # the engine's creation times are in whole seconds
    # Not the worker's: unlabelled under its registry, and labelled under another name.
    operator = _build(docker_client, tmp_path, base_image, f"{repository}:own", TEST_LABELS)
    elsewhere = _build(
        docker_client,
        tmp_path,
        base_image,
        f"portside-test/other-{uuid.uuid4().hex[:8]}:b",
        {images.BUILD_LABEL: "9", **TEST_LABELS},
    )
    sizes = {b: int(docker_client.api.inspect_image(i)["Size"]) for b, i in built.items()}
    # Build 1 still runs on this worker (its workspace is there); a container uses build 2's.
    (tmp_path / "workspaces" / "build-1-1").mkdir(parents=True)
    container = docker_client.api.create_container(built[2], "true", labels=TEST_LABELS)
    budget = sizes[1] + sizes[2] + sizes[5]
    runner = StepRunner(
        ControlPlane(NO_CONTROL_PLANE, "unused"),
        docker_client,
        WorkerConfig(
            node="build-test",
            registry=worker_registry,
            workspace_root=tmp_path / "workspaces",
            cache_max=budget,
        ),
        lambda *_: None,
    )
    try:
        runner.cleanup(5, 1)  # build 5 ends here
    finally:
        docker_client.api.remove_container(container["Id"], force=True)

    left = {b for b, image_id in built.items() if images.is_present(docker_client, image_id)}
    assert left == {1, 2, 5}
    assert runner.cache_removed == 2
    assert _usage(docker_client, worker_registry) <= budget
    for image_id in (operator, elsewhere):
        assert images.is_present(docker_client, image_id)
    assert images.is_present(docker_client, base_image)
