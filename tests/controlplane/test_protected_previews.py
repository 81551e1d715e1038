"""Protected previews: a service's previews ask for a basic-auth login (generated, shown
once, kept as an encrypted bcrypt line) or admit only listed networks. The agent puts the
middleware on the preview's router: checked on the real engine, container and compose."""

from __future__ import annotations

from typing import Any

import bcrypt
import docker
import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import AuditEvent, Build, Environment, Service
from controlplane.services import catalog, deployments, feedback, hosts, servicerules
from controlplane.settings import Settings
from hostagent.agent import run_once
from hostagent.errors import InvalidDesiredState
from hostagent.snapshot import parse_desired_state, parse_environment
from tests.controlplane.test_feedback_github import (  # noqa: F401 - github and preview are fixtures
    github,
    preview,
    set_status,
)
from tests.githubserver.server import GitHubServer
from tests.hostagent.factories import env_body, state_body
from tests.hostagent.test_apply_docker import (  # noqa: F401 - agent, images and uid are fixtures
    FakeSource,
    agent,
    compose_env,
    desired,
    images,
    only,
    uid,
)

BASIC = "basicauth.users"
ALLOW = "ipallowlist.sourcerange"


def make_service(database: Database, host: str, name: str) -> tuple[int, str]:
    """A service on a new host; returns its id and the host's agent token."""
    with database.session_scope() as session:
        _host, token = hosts.create_host(session, host, "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(name=name, repository=f"o/{name}", branch="main", host=host),
            "test",
        )
        service.port = 8080
        return service.id, token


def preview_running(database: Database, service_id: int, image: str) -> str:
    """A preview of pull request 7 deployed with ``image`` (repository@digest)."""
    repository, digest = image.split("@")
    with database.session_scope() as session:
        service = session.get(Service, service_id)
        assert service is not None
        environment = Environment(
            service_id=service.id,
            host_id=service.host_id,
            name=f"{service.name}-pr-7",
            kind="preview",
            branch="feature",
            pr_number=7,
            domain=f"{service.name}-pr-7.preview.example.com",
        )
        session.add(environment)
        session.flush()
        build = Build(
            service_id=service.id,
            environment_id=environment.id,
            commit_sha="c" * 40,
            branch="feature",
            status="succeeded",
            images={"app": {"repository": repository, "digest": digest}},
        )
        session.add(build)
        session.flush()
        deployments.record_deployment(session, service.id, build.id, "test")
        return environment.name


def generate(client: FlaskClient, headers: dict[str, str], service_id: int) -> str:
    response = client.post(f"/v1/services/{service_id}/preview-password", headers=headers)
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.get_json()
    assert body["username"] == "preview"
    password: str = body["password"]
    return password


def patch(
    client: FlaskClient, headers: dict[str, str], service_id: int, **fields: Any
) -> tuple[int, dict[str, Any]]:
    response = client.patch(f"/v1/services/{service_id}", json=fields, headers=headers)
    return response.status_code, response.get_json()


def verifies(labels: dict[str, str], router: str, password: str) -> bool:
    """Whether the router's basic-auth middleware lets ``preview``/``password`` in."""
    middleware = labels[f"traefik.http.routers.{router}.middlewares"]
    (line,) = labels[f"traefik.http.middlewares.{middleware}.{BASIC}"].split(",")
    user, hashed = line.split(":", 1)
    return user == "preview" and bcrypt.checkpw(password.encode(), hashed.encode())


def test_protection_fields_are_checked_and_the_password_is_shown_once(
    client: FlaskClient,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
    database: Database,
) -> None:
    service_id, _token = make_service(database, "web-1", "hello")
    status, body = patch(client, admin_headers, service_id, preview_protection="basic_auth")
    assert status == 422 and "preview-password" in str(body)
    status, body = patch(client, admin_headers, service_id, preview_protection="ip_allow")
    assert status == 422 and "preview_allow_networks" in str(body)
    status, body = patch(client, admin_headers, service_id, preview_allow_networks=["10.0.0.300"])
    assert status == 422
    status, body = patch(client, admin_headers, service_id, preview_protection="open")
    assert status == 422

    status, body = patch(
        client,
        admin_headers,
        service_id,
        preview_protection="ip_allow",
        preview_allow_networks=["10.1.2.3/8", "192.0.2.7", "10.0.0.0/8"],
    )
    assert status == 200, body
    assert body["preview_allow_networks"] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert body["preview_protection"] == "ip_allow"

    refused = client.post(f"/v1/services/{service_id}/preview-password", headers=read_headers)
    assert refused.status_code == 403
    password = generate(client, admin_headers, service_id)
    shown = client.get(f"/v1/services/{service_id}", headers=admin_headers)
    assert shown.get_json()["preview_protection"] == "basic_auth"
    assert password not in shown.get_data(as_text=True)
    with database.session_scope() as session:
        service = session.get(Service, service_id)
        assert service is not None and service.preview_htpasswd_encrypted is not None
        assert password.encode() not in service.preview_htpasswd_encrypted
        assert b"$2y$" not in service.preview_htpasswd_encrypted  # encrypted, not clear
        actions = session.scalars(select(AuditEvent.action)).all()
    assert "service.preview_password" in actions

    status, body = patch(client, admin_headers, service_id, preview_protection="none")
    assert status == 200 and body["preview_protection"] == "none"


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
def test_a_protected_preview_runs_behind_the_login_shown_once(
    client: FlaskClient,
    admin_headers: dict[str, str],
    database: Database,
    docker_client: docker.DockerClient,
    images: Any,  # noqa: F811 - the fixture
    agent: Any,  # noqa: F811 - the fixture
    uid: str,  # noqa: F811 - the fixture
) -> None:
    host = f"host-{uid}"
    service_id, token = make_service(database, host, f"p{uid}")
    name = preview_running(database, service_id, images("v1"))
    first = generate(client, admin_headers, service_id)
    second = generate(client, admin_headers, service_id)  # replaces the first

    def applied() -> dict[str, str]:
        snapshot = client.get(
            "/v1/agent/desired-state", headers={"Authorization": f"Bearer {token}"}
        )
        assert snapshot.status_code == 200, snapshot.json
        source = FakeSource(parse_desired_state(snapshot.get_json()))
        assert only(run_once(agent, source).report, name)["state"] == "running"
        (container,) = docker_client.containers.list(
            filters={"label": [f"io.portside.environment={name}", f"io.portside.host={host}"]}
        )
        labels: dict[str, str] = container.labels
        return labels

    labels = applied()
    assert verifies(labels, name, second)
    assert not verifies(labels, name, first)
    assert not verifies(labels, name, second + "x")

    status, _ = patch(
        client,
        admin_headers,
        service_id,
        preview_protection="ip_allow",
        preview_allow_networks=["192.0.2.0/24"],
    )
    assert status == 200
    labels = applied()
    assert labels[f"traefik.http.middlewares.{name}-protect.{ALLOW}"] == "192.0.2.0/24"
    assert not any(key.endswith(BASIC) for key in labels)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
def test_compose_previews_get_the_hash_through_compose_interpolation(
    images: Any,  # noqa: F811 - the fixture
    agent: Any,  # noqa: F811 - the fixture
    uid: str,  # noqa: F811 - the fixture
    docker_client: docker.DockerClient,
) -> None:
    host, name = f"host-{uid}", f"stack-{uid}"
    password = "correct horse battery staple"
    line = catalog.htpasswd_line("preview", password)
    image = images("v1")
    body = compose_env(name, image, image, 1)
    body["protection"] = {"basic_auth": [line]}
    source = FakeSource(desired(host, body))
    try:
        assert only(run_once(agent, source).report, name)["state"] == "running"
        web = next(
            c
            for c in docker_client.containers.list(
                filters={"label": [f"io.portside.environment={name}", f"io.portside.host={host}"]}
            )
            if c.labels["com.docker.compose.service"] == "web"
        )
        # Compose would have eaten an unescaped "$2y$10$...": the line arrives intact.
        assert web.labels[f"traefik.http.middlewares.{name}-protect.{BASIC}"] == line
        assert verifies(web.labels, name, password)
        assert not verifies(web.labels, name, "wrong")
    finally:
        agent.applier.compose_down(name, remove_volumes=True)


def test_the_pr_comment_says_the_preview_is_protected_and_never_how(
    database: Database,
    settings: Settings,
    github: GitHubApp,  # noqa: F811 - the fixture
    github_server: GitHubServer,
    preview: tuple[int, int],  # noqa: F811 - the fixture
) -> None:
    build_id, deployment_id = preview
    set_status(database, build_id, "succeeded")
    with database.session_scope() as session:
        (service,) = catalog.list_services(session)
        service.preview_protection = "ip_allow"
        service.preview_allow_networks = ["192.0.2.0/24"]
    with database.session_scope() as session:
        feedback.send(session, github, settings, "deployment_active", deployment_id)
    (comment,) = github_server.state.comments
    assert "is ready" in comment.body and "open only from `192.0.2.0/24`" in comment.body

    box = SecretBox.from_settings(settings)
    with database.session_scope() as session:
        _user, password = catalog.generate_preview_password(session, box, service.id, "test")
    with database.session_scope() as session:
        feedback.send(session, github, settings, "deployment_active", deployment_id)
    (comment,) = github_server.state.comments
    assert "asks for a login" in comment.body
    assert password not in comment.body and "$2y$" not in comment.body


@pytest.mark.parametrize(
    "protection",
    [
        {"basic_auth": ["preview:plain-text-password"]},
        {"basic_auth": ["preview:$2y$10$" + "a" * 53 + "\nrule: Host(`x`)"]},
        {"ip_allow": ["10.0.0.0/33"]},
        {"basic_auth": [], "ip_allow": []},
        {"ip_allow": "10.0.0.0/8"},
    ],
    ids=["clear-password", "newline", "bad-cidr", "empty", "not-a-list"],
)
def test_the_agent_refuses_a_protection_it_cannot_put_on_a_router(
    protection: dict[str, Any],
) -> None:
    """Only user:bcrypt lines and CIDRs reach a label: anything else refuses the preview."""
    body = state_body(env_body("hello-pr-1", kind="preview", protection=protection))
    state = parse_desired_state(body)
    assert state.environments == ()
    (refused,) = state.refused
    assert "protection" in refused.reason
    with pytest.raises(InvalidDesiredState):
        parse_environment(env_body("hello-pr-1", kind="preview", protection=protection), "env")
