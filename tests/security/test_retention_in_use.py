"""Registry retention must never delete an image something still needs: the registry's
repository is per GitHub repository, not per service, so two services of one repository
(or a rebuild of an old commit) push the same digest to the same repository. A digest
another service runs, or that a build held at a gate will deploy, stays."""

from __future__ import annotations

import docker
import pytest
from sqlalchemy.orm import Session

from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.models import Build, Deployment, Environment
from controlplane.services import catalog, hosts, servicerules
from controlplane.settings import Settings
from tests.controlplane.test_registry_auth import _build_and_push, _set_credentials
from tests.controlplane.test_registry_retention import _present, _prune
from tests.fixtures.docker import Registry, RegistryUsers


def _build(
    session: Session, environment: Environment, number: int, image: dict[str, str], status: str
) -> Build:
    build = Build(
        service_id=environment.service_id,
        environment_id=environment.id,
        commit_sha=f"{number:040x}",
        branch=environment.branch or "main",
        status=status,
        images={"app": image},
    )
    session.add(build)
    session.flush()
    return build


def _deploy(session: Session, environment: Environment, build: Build) -> None:
    deployment = Deployment(environment_id=environment.id, build_id=build.id)
    session.add(deployment)
    session.flush()
    environment.current_deployment_id = deployment.id


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
def test_retention_keeps_a_digest_another_service_runs_or_a_held_build_will_deploy(
    docker_client: docker.DockerClient,
    base_image: str,
    basic_registry: Registry,
    registry_users: RegistryUsers,
    database: Database,
    settings: Settings,
) -> None:
    box = SecretBox.from_settings(settings)
    images = [
        _build_and_push(docker_client, base_image, basic_registry, registry_users) for _ in range(5)
    ]
    pushed = [image.image() for image in images]
    _set_credentials(database, box, basic_registry.host, *registry_users.push)
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        first, second = (
            catalog.create_service(
                session,
                servicerules.ServiceSpec(
                    name=name, repository="o/hello", branch=branch, host="web-1"
                ),
                "test",
            )
            for name, branch in (("hello", "main"), ("hello-release", "release"))
        )
        production = first.environments[0]
        for number in range(4):
            built = _build(session, production, number, pushed[number], "succeeded")
        _deploy(session, production, built)
        # The same commit rebuilt from cache: the same digest as build 1, held for approval.
        _build(session, production, 10, pushed[1], "awaiting_approval")
        # The other service of the repository runs build 0's digest.
        other = second.environments[0]
        _deploy(session, other, _build(session, other, 20, pushed[0], "succeeded"))
        _deploy(session, other, _build(session, other, 21, pushed[4], "succeeded"))
        _deploy(session, other, _build(session, other, 22, pushed[0], "succeeded"))

    pruned = _prune(database, box)

    assert pruned.deleted == []
    assert all(_present(image) for image in images)
