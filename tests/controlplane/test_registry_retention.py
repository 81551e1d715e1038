"""The registry keeps each service's last PORTSIDE_REGISTRY_KEEP production images: older
ones are deleted by digest through the registry's API, with the stored push credentials
(the test registry with a login), except those an environment runs now or ran in one of
its last K deployments. A refused delete is tried again at the next pass."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.errors import ConfigError
from controlplane.models import Build, Deployment, Service
from controlplane.services import catalog, hosts, registries, retention, servicerules, telemetry
from controlplane.settings import Settings
from tasks import control, pipeline
from tests.controlplane.test_registry_auth import Pushed, _build_and_push, _set_credentials
from tests.fixtures.docker import Registry, RegistryUsers

KEEP = 2


def _production(database: Database, pushed: list[dict[str, str]]) -> list[int]:
    """Production built each of ``pushed`` in turn (oldest first); it deployed the first,
    second and last, then was rolled back to the first. The builds' ids."""
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="o/hello", branch="main", host="web-1"
            ),
            "test",
        )
        production = service.environments[0]
        ids = []
        for number, image in enumerate(pushed):
            build = Build(
                service_id=service.id,
                environment_id=production.id,
                commit_sha=f"{number:040x}",
                branch="main",
                status="succeeded",
                images={"app": image},
            )
            session.add(build)
            session.flush()
            ids.append(build.id)
        deployments = []
        for build_id in (ids[0], ids[1], ids[-1]):
            deployment = Deployment(environment_id=production.id, build_id=build_id)
            session.add(deployment)
            session.flush()
            deployments.append(deployment)
        production.current_deployment_id = deployments[0].id  # the rollback
        return ids


def _present(image: Pushed) -> bool:
    """Whether the registry still holds the pushed manifest under its tag."""
    return image.registry.manifest_digest(image.repo, image.tag) == image.digest


def _prune(database: Database, box: SecretBox) -> retention.Pruned:
    """One pass of the periodic task, in this process."""
    with database.session_scope() as session:

        def credentials_for(repository: str, installation_id: int | None) -> registries.Credentials:
            return registries.credentials_for(session, box, repository, installation_id)

        return retention.prune_registry(session, KEEP, credentials_for)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
def test_the_registry_keeps_the_last_k_production_images_and_every_rollback_target(
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
    ids = _production(database, pushed)
    user, password = registry_users.push

    _set_credentials(database, box, basic_registry.host, user, "wrong")
    refused = _prune(database, box)
    assert refused.deleted == []
    assert refused.refused == [f"{pushed[2]['repository']}@{pushed[2]['digest']}"]
    assert _present(images[2])

    _set_credentials(database, box, basic_registry.host, user, password)
    pruned = _prune(database, box)
    # Kept: the newest two builds (4 and 5), the one production runs after its rollback
    # (1) and the one of its last two deployments (2); gone: build 3.
    assert pruned.deleted == [f"{pushed[2]['repository']}@{pushed[2]['digest']}"]
    assert [_present(image) for image in images] == [True, True, False, True, True]
    with database.session_scope() as session:
        marked = {b.id for b in session.query(Build) if b.images_deleted_at is not None}
        counted = {
            sample.name: sample.value
            for family in telemetry.families(session)
            for sample in family.samples
        }
    assert marked == {ids[2]}
    assert counted["portside_registry_pruned_builds_total"] == 1

    # Production moves on: build 1 is no rollback target any more, and goes.
    with database.session_scope() as session:
        service = session.query(Service).one()
        production = service.environments[0]
        current = session.query(Deployment).filter_by(build_id=ids[-1]).one()
        production.current_deployment_id = current.id
    again = _prune(database, box)
    assert again.deleted == [f"{pushed[0]['repository']}@{pushed[0]['digest']}"]
    assert [_present(image) for image in images] == [False, True, False, True, True]


def test_beat_runs_the_registry_retention_on_the_control_queue(settings: Settings) -> None:
    schedule = pipeline.control_schedule(settings)
    assert schedule["prune-registry"]["task"] == pipeline.PRUNE_REGISTRY
    assert control.prune_registry.name == pipeline.PRUNE_REGISTRY


def test_the_number_of_images_kept_is_a_setting(tmp_path: Path) -> None:
    base = {"PORTSIDE_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(base).registry_keep == 10
    assert Settings.from_env({**base, "PORTSIDE_REGISTRY_KEEP": "3"}).registry_keep == 3
    with pytest.raises(ConfigError, match="PORTSIDE_REGISTRY_KEEP"):
        Settings.from_env({**base, "PORTSIDE_REGISTRY_KEEP": "0"})
