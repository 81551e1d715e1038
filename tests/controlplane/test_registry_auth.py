"""Registries that need a login (issue 15): the one with HTTP Basic (htpasswd) and the one
speaking the token flow (as GHCR, Docker Hub and Harbor do), both real docker-registry
processes of scripts/test-env.sh. The build worker pushes, the agent pulls with pull-only
credentials and the control plane deletes a torn-down preview's images; a refused delete
shows on the environment and is tried again until it succeeds."""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass

import docker
import pytest
from flask.testing import FlaskClient
from markupsafe import escape

from buildworker.errors import PermanentBuildError
from buildworker.images import push_image
from contracts.agentwire import RegistryAuth
from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.models import Build, Environment, Installation, Repository
from controlplane.services import catalog, hosts, previewcleanup, previews, registries, servicerules
from controlplane.settings import Settings
from hostagent.apply import Applier
from hostagent.errors import PermanentAgentError
from tasks.app import CONTROL_QUEUE
from tasks.pipeline import CLEAN_UP_PREVIEWS
from tests.dashboard.test_dashboard import viewer  # noqa: F401
from tests.fixtures.docker import TEST_LABELS, Registry, RegistryUsers
from tests.fixtures.processes import WorkerProcess, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_cleanup")]


@dataclass(frozen=True)
class Pushed:
    registry: Registry
    repo: str  # the path in the registry, portside-test/...
    tag: str
    digest: str

    @property
    def repository(self) -> str:
        return f"{self.registry.host}/{self.repo}"

    def image(self) -> dict[str, str]:
        """As a build records it."""
        return {"repository": self.repository, "tag": self.tag, "digest": self.digest}


@pytest.fixture(params=["basic_registry", "token_registry"])
def auth_registry(request: pytest.FixtureRequest) -> Registry:
    registry: Registry = request.getfixturevalue(request.param)
    return registry


def _build_and_push(
    client: docker.DockerClient, base_image: str, registry: Registry, users: RegistryUsers
) -> Pushed:
    """A small image of its own (so its digest is unique), pushed with the push user."""
    repo, tag = f"portside-test/auth-{uuid.uuid4().hex[:10]}", "abc123"
    dockerfile = f"FROM {base_image}\nRUN echo {repo} > /which\n"
    client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()),
        tag=f"{registry.host}/{repo}:{tag}",
        labels=TEST_LABELS,
    )
    user, password = users.push
    auth = {"username": user, "password": password}
    digest = push_image(client, f"{registry.host}/{repo}", tag, auth, lambda _line: None)
    return Pushed(registry, repo, tag, digest)


def test_push_pull_and_delete(
    docker_client: docker.DockerClient,
    base_image: str,
    auth_registry: Registry,
    registry_users: RegistryUsers,
    tmp_path,
) -> None:
    registry = auth_registry
    repo = f"portside-test/auth-{uuid.uuid4().hex[:10]}"
    docker_client.images.get(base_image).tag(f"{registry.host}/{repo}", "anonymous")
    with pytest.raises(PermanentBuildError):
        push_image(docker_client, f"{registry.host}/{repo}", "anonymous", {}, lambda _line: None)
    docker_client.images.remove(f"{registry.host}/{repo}:anonymous")

    pushed = _build_and_push(docker_client, base_image, registry, registry_users)
    assert registry.manifest_digest(pushed.repo, pushed.tag) == pushed.digest

    # The agent pulls by digest with the pull-only user; with no credentials it may not.
    docker_client.images.remove(f"{pushed.repository}:{pushed.tag}")
    reference = f"{pushed.repository}@{pushed.digest}"
    applier = Applier(docker_client, tmp_path / "state")
    with pytest.raises(PermanentAgentError, match="not allowed to pull"):
        applier.ensure_image(reference, None)
    applier.ensure_image(reference, RegistryAuth(registry.host, *registry_users.pull))
    docker_client.images.get(reference)
    if registry.bearer:  # the token server grants the pull user no push
        pull_user, pull_password = registry_users.pull
        docker_client.images.get(reference).tag(pushed.repository, "by-the-puller")
        with pytest.raises(PermanentBuildError):
            push_image(
                docker_client,
                pushed.repository,
                "by-the-puller",
                {"username": pull_user, "password": pull_password},
                lambda _line: None,
            )
        assert registry.list_tags(pushed.repo) == [pushed.tag]

    def credentials(user: str, password: str) -> registries.Credentials:
        return registries.Credentials(pushed.repository, user, password)

    push_user, push_password = registry_users.push
    with pytest.raises(registries.RegistryRefused):
        registries.delete_image(credentials(push_user, "wrong"), pushed.repository, pushed.digest)
    if registry.bearer:  # the token server grants the pull user no delete
        with pytest.raises(registries.RegistryRefused, match="refused to delete"):
            registries.delete_image(
                credentials(*registry_users.pull), pushed.repository, pushed.digest
            )
    assert registry.manifest_digest(pushed.repo, pushed.tag) == pushed.digest

    registries.delete_image(credentials(push_user, push_password), pushed.repository, pushed.digest)
    assert registry.manifest_digest(pushed.repo, pushed.tag) is None
    assert registry.list_tags(pushed.repo) == []
    # Already gone is fine: a retry after a lost answer must not fail.
    registries.delete_image(credentials(push_user, push_password), pushed.repository, pushed.digest)


def _preview_with_build(database: Database, pushed: Pushed) -> int:
    """A running preview whose build pushed ``pushed``; returns the environment's id."""
    with database.session_scope() as session:
        session.add(Installation(id=1, account_login="Codertocat"))
        session.add(Repository(id=4242, installation_id=1, full_name="Codertocat/Hello-World"))
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="Codertocat/Hello-World", branch="master", host="web-1"
            ),
            "test",
        )
        environment = Environment(
            service_id=service.id,
            host_id=service.host_id,
            name="hello-pr-7",
            kind="preview",
            status="running",
            branch="feature",
            pr_number=7,
        )
        session.add(environment)
        session.flush()
        session.add(
            Build(
                service_id=service.id,
                environment_id=environment.id,
                commit_sha="c" * 40,
                branch="feature",
                status="succeeded",
                images={"web": pushed.image()},
            )
        )
        return environment.id


def _set_credentials(
    database: Database, box: SecretBox, address: str, user: str, password: str
) -> None:
    """The registry's push credentials, replacing any there were (as an operator would)."""
    with database.session_scope() as session:
        for old in registries.list_registries(session):
            registries.delete_registry(session, old.id, "test")
        registries.create_registry(
            session,
            box,
            address=address,
            username=user,
            password=password,
            installation_id=None,
            actor="test",
        )


def _delete_pending(database: Database, box: SecretBox) -> list[bool]:
    """What clean_up_previews' retry does, in this process: each pending preview's images."""
    with database.session_scope() as session:
        pending = previewcleanup.pending_image_deletions(session)
    done = []
    for images in pending:
        with database.session_scope() as session:

            def credentials_for(
                repository: str, installation_id: int | None
            ) -> registries.Credentials:
                return registries.credentials_for(session, box, repository, installation_id)

            environment_id = images[0]["environment_id"]
            done.append(
                previewcleanup.delete_images(session, environment_id, images, credentials_for)
            )
    return done


def test_a_refused_delete_shows_and_a_retry_with_fixed_credentials_succeeds(
    docker_client: docker.DockerClient,
    base_image: str,
    auth_registry: Registry,
    registry_users: RegistryUsers,
    database: Database,
    settings: Settings,
    client: FlaskClient,
    admin_headers: dict[str, str],
    viewer: FlaskClient,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = auth_registry
    box = SecretBox.from_settings(settings)
    pushed = _build_and_push(docker_client, base_image, registry, registry_users)
    environment_id = _preview_with_build(database, pushed)
    push_user, push_password = registry_users.push
    _set_credentials(database, box, registry.host, push_user, "wrong-password")

    with database.session_scope() as session:
        environment = session.get(Environment, environment_id)
        assert environment is not None
        images = previews.teardown(session, environment, "test", "pull request closed")
    assert [image["digest"] for image in images] == [pushed.digest]

    with caplog.at_level(logging.WARNING, logger="controlplane.services.previews"):
        assert _delete_pending(database, box) == [False]
    assert any(
        record.levelno == logging.WARNING and previewcleanup.IMAGES_REFUSED in record.getMessage()
        for record in caplog.records
    )
    shown = client.get(f"/v1/environments/{environment_id}", headers=admin_headers).json
    assert shown["status"] == "inactive"
    assert shown["status_reason"].startswith(previewcleanup.IMAGES_REFUSED)
    assert registry.host in shown["status_reason"]
    assert registry.manifest_digest(pushed.repo, pushed.tag) == pushed.digest
    page = viewer.get("/").get_data(as_text=True)
    assert 'data-environment="hello-pr-7"' in page and escape(previewcleanup.IMAGES_REFUSED) in page

    _set_credentials(database, box, registry.host, push_user, push_password)
    assert _delete_pending(database, box) == [True]
    assert registry.manifest_digest(pushed.repo, pushed.tag) is None
    assert registry.list_tags(pushed.repo) == []
    shown = client.get(f"/v1/environments/{environment_id}", headers=admin_headers).json
    assert shown["status_reason"] is None
    assert _delete_pending(database, box) == []  # nothing left to try
    assert 'data-environment="hello-pr-7"' not in viewer.get("/").get_data(as_text=True)


def test_the_control_worker_deletes_and_retries_a_teardowns_images(
    docker_client: docker.DockerClient,
    base_image: str,
    token_registry: Registry,
    registry_users: RegistryUsers,
    database: Database,
    settings: Settings,
    client: FlaskClient,
    admin_headers: dict[str, str],
    celery_client,
    control_worker: WorkerProcess,
) -> None:
    """End to end: the API's teardown sends the deletion to a real control worker; the
    token registry refuses the wrong password, the environment says so, and the periodic
    clean-up deletes the images once the credentials are fixed."""
    registry = token_registry
    box = SecretBox.from_settings(settings)
    pushed = _build_and_push(docker_client, base_image, registry, registry_users)
    environment_id = _preview_with_build(database, pushed)
    push_user, push_password = registry_users.push
    _set_credentials(database, box, registry.host, push_user, "wrong-password")

    removed = client.delete(f"/v1/environments/{environment_id}", headers=admin_headers)
    assert removed.status_code in (200, 204)

    def reason() -> str | None:
        shown = client.get(f"/v1/environments/{environment_id}", headers=admin_headers).json
        return shown["status_reason"]

    shown_reason = wait_until(reason, "the refusal on the environment", timeout=60)
    assert shown_reason.startswith(previewcleanup.IMAGES_REFUSED)
    wait_until(
        lambda: previewcleanup.IMAGES_REFUSED in control_worker.log(), "the warning in the log", 30
    )
    assert registry.manifest_digest(pushed.repo, pushed.tag) == pushed.digest

    _set_credentials(database, box, registry.host, push_user, push_password)
    celery_client.send_task(CLEAN_UP_PREVIEWS, queue=CONTROL_QUEUE, ignore_result=True)
    wait_until(
        lambda: registry.manifest_digest(pushed.repo, pushed.tag) is None,
        "the images deleted",
        timeout=60,
    )
    wait_until(lambda: reason() is None, "the refusal cleared", timeout=30)
    assert registry.list_tags(pushed.repo) == []


def test_a_previews_image_production_also_pushed_is_not_deleted(
    docker_client: docker.DockerClient,
    base_image: str,
    auth_registry: Registry,
    registry_users: RegistryUsers,
    database: Database,
    settings: Settings,
) -> None:
    """A same-repository preview built from production's cache can come out identical to
    production's image: one manifest, one digest. Deleting the preview's by digest would
    take production's with it."""
    registry = auth_registry
    box = SecretBox.from_settings(settings)
    pushed = _build_and_push(docker_client, base_image, registry, registry_users)
    environment_id = _preview_with_build(database, pushed)
    _set_credentials(database, box, registry.host, *registry_users.push)
    with database.session_scope() as session:
        preview = session.get(Environment, environment_id)
        assert preview is not None
        (production,) = [e for e in preview.service.environments if e.kind == "production"]
        session.add(
            Build(
                service_id=preview.service_id,
                environment_id=production.id,
                commit_sha="d" * 40,
                branch="master",
                status="succeeded",
                images={"web": pushed.image()},
            )
        )
        previews.teardown(session, preview, "test", "pull request closed")

    assert _delete_pending(database, box) == [True]
    assert registry.manifest_digest(pushed.repo, pushed.tag) == pushed.digest
    assert _delete_pending(database, box) == []
