"""Preview environments end to end, driven by GitHub's real pull_request payloads."""

from __future__ import annotations

import copy
from typing import Any

import docker
import pytest
import requests
from sqlalchemy import select

from controlplane.crypto import SecretBox
from controlplane.models import Build, Deployment, Environment, Service
from controlplane.services import variables
from tests.fixtures.stack import Stack, wait_for
from tests.helpers import json_payload
from tests.tasks.test_pipeline_e2e import REPOSITORY, install, post_delivery

pytestmark = [pytest.mark.docker, pytest.mark.slow]
NAME = "hello-pr-2"


def pull_request(
    stack: Stack, action: str, branch: str, *, fork: bool = False, number: int = 2
) -> dict[str, Any]:
    """GitHub's recorded payload, pointed at the test server's repository and branch."""
    name = "closed" if action == "closed" else "opened"
    payload = copy.deepcopy(json_payload(f"pull_request__{name}.payload.json"))
    repo = stack.github.repository_json(REPOSITORY)
    payload["action"] = action
    payload["number"] = payload["pull_request"]["number"] = number
    payload["installation"]["id"] = 957387
    payload["repository"].update({k: repo[k] for k in ("id", "full_name", "name", "clone_url")})
    head = payload["pull_request"]["head"]
    head["ref"] = branch
    head["sha"] = stack.github.state.repository(REPOSITORY).path and _tip(stack, branch)
    head["repo"]["full_name"] = "someone/Hello-World" if fork else REPOSITORY
    payload["pull_request"]["base"]["ref"] = "master"
    return payload


def _tip(stack: Stack, branch: str) -> str:
    from tests.githubserver import repos

    sha = repos.resolve_commit(
        stack.github.state.repository(REPOSITORY).path, f"refs/heads/{branch}"
    )
    assert sha is not None
    return sha


def preview(stack: Stack) -> Environment | None:
    with stack.database.session_scope() as session:
        return session.scalar(select(Environment).where(Environment.name == NAME))


def awaiting_approval(stack: Stack) -> Environment | None:
    env = preview(stack)
    return env if env is not None and env.status == "awaiting_approval" else None


def serving(stack: Stack, text: str) -> str | None:
    env = preview(stack)
    if env is None or not env.address or env.status == "inactive":
        return None
    try:
        return (
            env.address if text in requests.get(f"http://{env.address}/", timeout=2).text else None
        )
    except requests.RequestException:
        return None


def with_domain_and_secret(stack: Stack) -> None:
    with stack.database.session_scope() as session:
        service = session.scalar(select(Service))
        assert service is not None
        service.domain = "hello.example.com"
        variables.set_variable(
            session,
            SecretBox.from_settings(stack.settings),
            service.id,
            name="API_KEY",
            value="very-secret-key",
            actor="test",
        )


def test_preview_lifecycle(
    stack: Stack,
    base_image: str,
    docker_client: docker.DockerClient,
    registry: Any,
    docker_cleanup: None,
) -> None:
    install(stack, base_image)
    with_domain_and_secret(stack)
    stack.start_buildworker("build-preview")
    stack.start_agent("web-1")
    state = stack.github.state
    state.commit(REPOSITORY, {"index.html": "preview one\n"}, branch="changes")
    state.add_pull_request(REPOSITORY, 2, "changes", base_ref="master")
    post_delivery(stack, "pull_request", pull_request(stack, "opened", "changes"))
    wait_for(lambda: serving(stack, "preview one"), 300, 0.5, "the preview to serve")

    (container,) = docker_client.containers.list(
        filters={"label": f"io.portside.environment={NAME}"}
    )
    rule = container.labels[f"traefik.http.routers.{NAME}.rule"]
    assert "Host(`pr-2.hello.example.com`)" in rule
    assert "API_KEY=very-secret-key" in container.attrs["Config"]["Env"]
    wait_for(lambda: any(s.state == "success" for s in state.deployment_statuses), 60, 0.5)
    success = next(s for s in state.deployment_statuses if s.state == "success")
    assert success.environment_url == "https://pr-2.hello.example.com"
    assert state.deployments[0].environment == NAME
    assert state.deployments[0].transient_environment is True
    wait_for(lambda: len(state.comments) == 1, 60, 0.5, "the PR comment")
    assert any(s.context == "portside/build" and s.state == "success" for s in state.statuses)

    state.commit(REPOSITORY, {"index.html": "preview two\n"}, branch="changes")
    post_delivery(stack, "pull_request", pull_request(stack, "synchronize", "changes"))
    wait_for(lambda: serving(stack, "preview two"), 300, 0.5, "the new head to serve")
    two = _tip(stack, "changes")
    wait_for(lambda: two[:7] in state.comments[0].body, 60, 0.5, "the comment to be edited")
    assert len(state.comments) == 1

    with stack.database.session_scope() as session:
        images = [d.build.images["app"] for d in session.scalars(select(Deployment))]
    post_delivery(stack, "pull_request", pull_request(stack, "closed", "changes"))

    def gone() -> bool:
        left = docker_client.containers.list(
            all=True, filters={"label": f"io.portside.environment={NAME}"}
        )
        return not left and all(
            registry.manifest_digest(i["repository"].split("/", 1)[1], i["tag"]) is None
            for i in images
        )

    wait_for(gone, 120, 0.5, "the preview's containers and images to go")
    env = preview(stack)
    assert env is not None and env.status == "inactive" and env.closed_reason == "closed"
    with stack.database.session_scope() as session:
        assert {d.status for d in session.scalars(select(Deployment))} == {"inactive"}
    wait_for(lambda: "removed" in state.comments[0].body, 60, 0.5, "the comment to say so")
    wait_for(lambda: any(s.state == "inactive" for s in state.deployment_statuses), 60, 0.5)


def test_fork_preview_waits_for_approval_gets_no_secret_and_a_missed_close_is_cleaned_up(
    stack: Stack,
    base_image: str,
    docker_client: docker.DockerClient,
    registry: Any,
    docker_cleanup: None,
) -> None:
    install(stack, base_image)
    with_domain_and_secret(stack)
    sandbox = stack.create_host("sandbox-1", untrusted=True)
    stack.start_buildworker("build-fork", {"PORTSIDE_BUILD_UNTRUSTED": "yes"})
    stack.start_agent("web-1")
    stack.start_agent("sandbox-1")
    state = stack.github.state
    state.commit(REPOSITORY, {"index.html": "from a fork\n"}, branch="fork-change")
    pull = state.add_pull_request(REPOSITORY, 2, "fork-change", base_ref="master")
    post_delivery(stack, "pull_request", pull_request(stack, "opened", "fork-change", fork=True))
    waiting = wait_for(lambda: awaiting_approval(stack), 60, 0.2, "the fork preview to wait")
    with stack.database.session_scope() as session:
        assert not session.scalars(select(Build)).all()
    response = stack.approve(waiting.id)
    assert response.status_code == 200, response.text
    wait_for(lambda: serving(stack, "from a fork"), 300, 0.5, "the fork preview to serve")
    (container,) = docker_client.containers.list(
        filters={"label": f"io.portside.environment={NAME}"}
    )
    assert not any(e.startswith("API_KEY=") for e in container.attrs["Config"]["Env"])
    env = preview(stack)
    assert env is not None and env.host_id == sandbox
    with stack.database.session_scope() as session:
        (build,) = session.scalars(select(Build))
        assert build.untrusted is True

    pull.state = "closed"  # GitHub closed it; the delivery never came
    stack.send("portside.clean_up_previews")
    wait_for(
        lambda: (
            not docker_client.containers.list(
                all=True, filters={"label": f"io.portside.environment={NAME}"}
            )
        ),
        120,
        0.5,
        "the missed close to be cleaned up",
    )
    env = preview(stack)
    assert env is not None and env.status == "inactive"
    assert "delivery missed" in (env.closed_reason or "")
