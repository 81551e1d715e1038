"""A host agent away for a while: the hosts API shows it offline with its desired state
ahead of what it applied; back, it converges to the deployment recorded meanwhile."""

from __future__ import annotations

import secrets
from typing import Any

import docker
import pytest
import requests
from sqlalchemy import select

from controlplane.models import Build, Deployment, Host
from tests.fixtures.stack import Stack, wait_for
from tests.hostagent.test_agent_e2e import deployment_status, serving
from tests.tasks.test_pipeline_e2e import finished, install, push, stack_read_headers

pytestmark = [pytest.mark.faults, pytest.mark.docker, pytest.mark.slow]

# Agents of other test runs may share the Docker engine; each only sees the containers
# labelled with its own host name, so this test's host has a name of its own.
HOST = f"offline-{secrets.token_hex(4)}"


def host_view(stack: Stack, headers: dict[str, str]) -> dict[str, Any]:
    response = requests.get(f"{stack.url}/v1/hosts", headers=headers, timeout=10)
    response.raise_for_status()
    (host,) = [h for h in response.json() if h["name"] == HOST]
    return dict(host)


def test_an_agent_back_from_offline_converges_to_the_new_deployment(
    stack: Stack,
    base_image: str,
    docker_client: docker.DockerClient,
    registry: Any,
    docker_cleanup: None,
) -> None:
    install(stack, base_image)
    with stack.database.session_scope() as session:
        (host,) = session.scalars(select(Host))
        host.name = HOST
    headers = stack_read_headers(stack)
    stack.start_buildworker("build-offline")
    agent = stack.start_agent(HOST)
    first = push(stack, {"index.html": "before the outage\n"}, 1_700_020_000)
    assert wait_for(lambda: finished(stack, first), 300, 0.5).status == "succeeded"
    wait_for(lambda: deployment_status(stack, first) == "active", 120, 0.5, "the first version")
    online = host_view(stack, headers)
    assert online["online"] is True
    assert online["applied_generation"] == online["generation"]

    agent.stop()
    second = push(stack, {"index.html": "after the outage\n"}, 1_700_020_100)
    assert wait_for(lambda: finished(stack, second), 300, 0.5).status == "succeeded"
    assert deployment_status(stack, second) == "pending"

    def offline() -> dict[str, Any] | None:
        view = host_view(stack, headers)
        return view if view["online"] is False else None

    # Offline once the agent missed its check-ins for the control plane's grace period.
    away = wait_for(offline, 120, 1.0, "the host to be shown offline")
    assert away["generation"] > away["applied_generation"] == online["applied_generation"]

    stack.start_agent(HOST)
    wait_for(lambda: serving(stack, "after the outage"), 120, 0.5, "the new version to serve")
    wait_for(lambda: deployment_status(stack, second) == "active", 60, 0.5, "activation")

    def converged() -> dict[str, Any] | None:
        view = host_view(stack, headers)
        done = view["online"] and view["applied_generation"] == view["generation"]
        return view if done else None

    back = wait_for(converged, 60, 0.5, "the host online with the new generation applied")
    assert back["generation"] >= away["generation"]
    wanted = [str(deployment_id(stack, second))]

    def only_the_new_container() -> bool:
        running = docker_client.containers.list(filters={"label": f"io.portside.host={HOST}"})
        return [c.labels.get("io.portside.deployment") for c in running] == wanted

    wait_for(only_the_new_container, 30, 0.5, "the old container to be gone")
    with stack.database.session_scope() as session:
        builds = sorted((b.commit_sha, b.status) for b in session.scalars(select(Build)))
        deployments = sorted(
            (d.build.commit_sha, d.status) for d in session.scalars(select(Deployment))
        )
    assert builds == sorted([(first, "succeeded"), (second, "succeeded")])
    assert deployments == sorted([(first, "superseded"), (second, "active")])


def deployment_id(stack: Stack, sha: str) -> int:
    with stack.database.session_scope() as session:
        found = session.scalar(
            select(Deployment.id)
            .join(Build, Deployment.build_id == Build.id)
            .where(Build.commit_sha == sha)
        )
    assert found is not None
    return found
