"""The registry keeps each service's last PORTSIDE_REGISTRY_KEEP production images: older
ones are deleted by digest through the registry's API, with the stored push credentials
(the test registry with a login), except those an environment runs now or ran in one of
its last K deployments. A refused delete is tried again at the next pass."""

from __future__ import annotations

import io
import uuid

import docker
import pytest

from buildworker.images import push_image
from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.models import Build, Deployment, Service
from controlplane.services import hosts, registries, retention, services, telemetry
from controlplane.settings import Settings
from tasks import control, pipeline
from tests.fixtures.docker import TEST_LABELS, Registry, RegistryUsers

KEEP = 2


def _push(
    client: docker.DockerClient,
    base_image: str,
    registry: Registry,
    users: RegistryUsers,
    repo: str,
) -> dict[str, str]:
    """An image of its own (a label makes its digest unique), pushed as a build does."""
    tag = uuid.uuid4().hex[:12]
    dockerfile = f"FROM {base_image}\nLABEL io.portside.test.which={tag}\n"
    client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()),
        tag=f"{registry.host}/{repo}:{tag}",
        labels=TEST_LABELS,
    )
    user, password = users.push
    auth = {"username": user, "password": password}
    digest = push_image(client, f"{registry.host}/{repo}", tag, auth, lambda _line: None)
    return {"repository": f"{registry.host}/{repo}", "tag": tag, "digest": digest}


def _production(database: Database, pushed: list[dict[str, str]]) -> list[int]:
    """Production built each of ``pushed`` in turn (oldest first); it deployed the first,
    second and last, then was rolled back to the first. The builds' ids."""
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        service = services.create_service(
            session,
            services.ServiceSpec(name="hello", repository="o/hello", branch="main", host="web-1"),
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


def _set_credentials(database: Database, box: SecretBox, address: str, user: str, pw: str) -> None:
    with database.session_scope() as session:
        for old in registries.list_registries(session):
            registries.delete_registry(session, old.id, "test")
        registries.create_registry(
            session,
            box,
            address=address,
            username=user,
            password=pw,
            installation_id=None,
            actor="test",
        )


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
    repo = f"portside-test/keep-{uuid.uuid4().hex[:10]}"
    pushed = [
        _push(docker_client, base_image, basic_registry, registry_users, repo) for _ in range(5)
    ]
    ids = _production(database, pushed)
    user, password = registry_users.push

    _set_credentials(database, box, basic_registry.host, user, "wrong")
    refused = _prune(database, box)
    assert refused.deleted == []
    assert refused.refused == [f"{pushed[2]['repository']}@{pushed[2]['digest']}"]
    assert basic_registry.manifest_digest(repo, pushed[2]["tag"]) == pushed[2]["digest"]

    _set_credentials(database, box, basic_registry.host, user, password)
    pruned = _prune(database, box)
    # Kept: the newest two builds (4 and 5), the one production runs after its rollback
    # (1) and the one of its last two deployments (2); gone: build 3.
    assert pruned.deleted == [f"{pushed[2]['repository']}@{pushed[2]['digest']}"]
    for number, image in enumerate(pushed):
        present = basic_registry.manifest_digest(repo, image["tag"]) == image["digest"]
        assert present == (number != 2), number
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
    assert basic_registry.manifest_digest(repo, pushed[0]["tag"]) is None
    assert basic_registry.manifest_digest(repo, pushed[1]["tag"]) == pushed[1]["digest"]


def test_beat_runs_the_registry_retention_on_the_control_queue(settings: Settings) -> None:
    schedule = pipeline.control_schedule(settings)
    assert schedule["prune-registry"]["task"] == pipeline.PRUNE_REGISTRY
    assert control.prune_registry.name == pipeline.PRUNE_REGISTRY
