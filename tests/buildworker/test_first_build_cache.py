"""A new branch's first build takes its layers from production's image: the control plane
names that image in the build step's spec, the worker (which has neither it nor any
local cache of it) pulls it from the registry, and every step of the unchanged
Dockerfile comes from it. A fork's build is offered no such image."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from flask import Flask
from flask.testing import FlaskClient

from buildworker import images
from buildworker.api import ControlPlane
from buildworker.names import image_repository
from buildworker.runner import StepRunner, WorkerConfig
from controlplane.db import Database
from controlplane.models import Build, Deployment, Environment, Service
from controlplane.services import catalog, hosts, pushes, servicerules
from tests.fixtures.docker import Registry
from tests.support.live import LiveServer

DOCKERFILE = "FROM {base}\nRUN echo one > /one\nRUN echo two > /two\nCOPY app.txt /app.txt\n"
CACHED_STEPS = 3  # the two RUNs and the COPY


@pytest.fixture
def live(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    try:
        yield server
    finally:
        server.stop()


def _service(database: Database, repository: str) -> tuple[int, int]:
    """A service on branch main; (service id, production environment id)."""
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository=repository, branch="main", host="web-1"
            ),
            "test",
        )
        return service.id, service.environments[0].id


def _deploy_production(
    database: Database, service_id: int, environment_id: int, image: dict[str, str]
) -> None:
    """Production runs a succeeded build of main whose image is ``image``."""
    with database.session_scope() as session:
        service = session.get(Service, service_id)
        production = session.get(Environment, environment_id)
        assert service is not None and production is not None
        build = pushes.start_build(session, service, production, "a" * 40, branch="main")
        assert build is not None
        build.status = "succeeded"
        build.images = {"app": image}
        session.flush()
        deployment = Deployment(environment_id=production.id, build_id=build.id, status="active")
        session.add(deployment)
        session.flush()
        production.current_deployment_id = deployment.id


def _preview_build(database: Database, service_id: int, *, fork: bool) -> int:
    """A queued build of pull request 5's branch feature/x; its id."""
    with database.session_scope() as session:
        service = session.get(Service, service_id)
        assert service is not None
        environment = Environment(
            service_id=service.id,
            host_id=service.host_id,
            name=f"hello-pr-5{'-fork' if fork else ''}",
            kind="preview",
            branch="feature/x",
            pr_number=5,
            from_fork=fork,
        )
        session.add(environment)
        session.flush()
        build = pushes.start_build(
            session, service, environment, "b" * 40, branch="feature/x", untrusted=fork
        )
        assert build is not None
        return build.id


def _checkout(runner: StepRunner, build_id: int, base_image: str) -> None:
    """What the clone step leaves: the same Dockerfile and files as production's."""
    checkout = runner.workspace(build_id, 1) / "src"
    checkout.mkdir(parents=True)
    (checkout / "Dockerfile").write_text(DOCKERFILE.format(base=base_image))
    (checkout / "app.txt").write_text("hello\n")


def _claim(client: FlaskClient, headers: dict[str, str], build_id: int, step: str) -> Any:
    claimed = client.post(
        f"/v1/builds/{build_id}/steps/{step}/claim",
        json={"attempt": 1, "worker": "build-test"},
        headers=headers,
    )
    assert claimed.status_code == 200, claimed.json
    return claimed.json


def _finish_clone(client: FlaskClient, headers: dict[str, str], build_id: int) -> None:
    _claim(client, headers, build_id, "clone")
    finished = client.post(
        f"/v1/builds/{build_id}/steps/clone/finish",
        json={"attempt": 1, "status": "succeeded"},
        headers=headers,
    )
    assert finished.status_code == 204, finished.json


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
def test_a_new_branch_builds_every_layer_from_the_production_image(
    client: FlaskClient,
    database: Database,
    worker_headers: dict[str, str],
    live: LiveServer,
    docker_client: docker.DockerClient,
    registry: Registry,
    base_image: str,
    tmp_path: Path,
) -> None:
    full_name = f"o/cache-{uuid.uuid4().hex[:8]}"
    repository = image_repository(registry.host, full_name, None)
    lines: list[str] = []
    runner = StepRunner(
        ControlPlane(live.url, worker_headers["Authorization"].removeprefix("Bearer ")),
        docker_client,
        WorkerConfig(node="build-test", registry=registry.host, workspace_root=tmp_path),
        lambda _build_id, new: lines.extend(new),
    )
    # Production's image, built and pushed as a build of main would be.
    context = tmp_path / "production"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base_image))
    (context / "app.txt").write_text("hello\n")
    images.build_image(
        docker_client,
        context,
        "Dockerfile",
        f"{repository}:aaaaaaaaaaaa",
        {images.BUILD_LABEL: "1"},
        {},
        print,
    )
    digest = images.push_image(docker_client, repository, "aaaaaaaaaaaa", None, print)
    production_layers = docker_client.api.inspect_image(f"{repository}@{digest}")["RootFS"][
        "Layers"
    ]
    service_id, production_id = _service(database, full_name)
    _deploy_production(
        database,
        service_id,
        production_id,
        {"repository": repository, "tag": "aaaaaaaaaaaa", "digest": digest},
    )
    # The worker has neither the image nor the classic builder's cache of its steps (the
    # image's untagged parents go with it): its layers can only come from the registry.
    docker_client.api.remove_image(f"{repository}@{digest}", force=True)
    assert not images.is_present(docker_client, f"{repository}@{digest}")

    build_id = _preview_build(database, service_id, fork=False)
    _finish_clone(client, worker_headers, build_id)
    _checkout(runner, build_id, base_image)
    runner.run("build", build_id, 1)

    built = docker_client.api.inspect_image(f"{repository}:{'b' * 12}")
    assert built["RootFS"]["Layers"] == production_layers
    assert sum("Using cache" in line for line in lines) == CACHED_STEPS, lines
    assert f"pulling {repository}@{digest}" in lines
    # The branch has no image of its own yet: said once, and not as an error.
    assert any(line.startswith(f"no build cache from {repository}:feature-x") for line in lines)
    assert not any(line.startswith("ERROR") for line in lines), lines


def test_the_build_spec_names_production_images_for_a_branch_and_none_for_a_fork(
    client: FlaskClient,
    database: Database,
    worker_headers: dict[str, str],
) -> None:
    service_id, production_id = _service(database, "o/hello")
    digest = "sha256:" + "4" * 64
    image = {"repository": "127.0.0.1:5001/o/hello", "tag": "aaaaaaaaaaaa", "digest": digest}
    _deploy_production(database, service_id, production_id, image)
    trusted = _preview_build(database, service_id, fork=False)
    fork = _preview_build(database, service_id, fork=True)
    with database.session_scope() as session:
        build = session.get(Build, fork)
        assert build is not None and build.untrusted

    _finish_clone(client, worker_headers, trusted)
    spec = _claim(client, worker_headers, trusted, "build")
    assert spec["cache_from"] == {"app": [f"127.0.0.1:5001/o/hello@{digest}"]}

    _finish_clone(client, worker_headers, fork)
    spec = _claim(client, worker_headers, fork, "build")
    assert spec["untrusted"] is True
    assert spec["cache_from"] == {}
