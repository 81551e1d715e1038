"""End to end: a signed push becomes images in the registry and a recorded deployment,
through real Celery workers, git over HTTP, the Docker engine and the registry."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import select

from contracts.steps import STEPS
from controlplane.models import Build, Deployment, WebhookDelivery
from controlplane.services import catalog, hosts, servicerules
from tests.fixtures.stack import Stack, wait_for
from tests.helpers import json_payload, webhook_headers

pytestmark = [pytest.mark.docker, pytest.mark.slow]

INSTALLATION = 957387
REPOSITORY = "Codertocat/Hello-World"


def post_delivery(stack: Stack, event: str, payload: dict[str, Any]) -> int:
    body = json.dumps(payload).encode()
    response = requests.post(
        f"{stack.url}/webhooks/github", data=body, headers=webhook_headers(event, body), timeout=10
    )
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def install(stack: Stack, base_image: str) -> None:
    """The App installed on a repository whose Dockerfile builds FROM the test base image."""
    state = stack.github.state
    state.add_installation(INSTALLATION, "Codertocat")
    state.add_repository(INSTALLATION, REPOSITORY, default_branch="master")
    state.commit(
        REPOSITORY,
        {
            "Dockerfile": f"FROM {base_image}\nCOPY index.html /www/index.html\n"
            'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n',
            "index.html": "hello\n",
        },
        branch="master",
    )
    payload = json_payload("installation__created.payload.json")
    payload["installation"]["id"] = INSTALLATION
    repo = state.repository(REPOSITORY)
    payload["repositories"] = [{"id": repo.id, "name": repo.name, "full_name": REPOSITORY}]
    delivery_id = post_delivery(stack, "installation", payload)
    wait_for(lambda: delivery_status(stack, delivery_id) == "processed", 60, what="installation")
    with stack.database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository=REPOSITORY, branch="master", host="web-1", port=8080
            ),
            "test",
        )


def delivery_status(stack: Stack, delivery_id: int) -> str | None:
    with stack.database.session_scope() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        return delivery.status if delivery else None


def push(stack: Stack, files: dict[str, str], pushed_at: int) -> str:
    sha = stack.github.state.commit(REPOSITORY, files, branch="master")
    post_delivery(stack, "push", push_payload(stack, sha, pushed_at))
    return sha


def push_payload(stack: Stack, sha: str, pushed_at: int) -> dict[str, Any]:
    """GitHub's recorded push of ``sha`` to master, pointed at the test GitHub's repository."""
    payload = copy.deepcopy(json_payload("push__with-new-branch.payload.json"))
    payload["installation"]["id"] = INSTALLATION
    payload["repository"].update(
        {
            key: value
            for key, value in stack.github.repository_json(REPOSITORY).items()
            if key in ("id", "clone_url", "full_name", "name")
        }
    )
    payload["repository"]["pushed_at"] = pushed_at
    payload["after"] = sha
    payload["head_commit"]["id"] = sha
    return payload


def build_of(stack: Stack, sha: str) -> Build | None:
    with stack.database.session_scope() as session:
        return session.scalar(select(Build).where(Build.commit_sha == sha))


def finished(stack: Stack, sha: str) -> Build | None:
    build = build_of(stack, sha)
    return build if build and build.status in ("succeeded", "failed", "cancelled") else None


class CountingRequests:
    """WSGI middleware noting the method, path and user agent of every request served."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        agent = environ.get("HTTP_USER_AGENT", "")
        self.seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], agent))
        return self.app(environ, start_response)

    def of_worker(self) -> list[str]:
        """The build worker's requests but heartbeats, as ``METHOD path``."""
        return [
            f"{method} {path}"
            for method, path, agent in self.seen
            if agent == "portside-buildworker" and not path.endswith("/heartbeat")
        ]


def test_push_builds_pushes_and_records_a_deployment(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    install(stack, base_image)
    counting = CountingRequests(stack.app.wsgi_app)
    stack.app.wsgi_app = counting  # type: ignore[method-assign]
    stack.start_buildworker("build-e2e")
    sha = push(stack, {"index.html": "version 1\n"}, 1_700_000_000)
    build = wait_for(lambda: build_of(stack, sha), 60, what="the build row")

    followed: list[str] = []

    def follow() -> None:
        with requests.get(
            f"{stack.url}/v1/builds/{build.id}/logs",
            headers={"Accept": "text/event-stream", **stack_read_headers(stack)},
            stream=True,
            timeout=300,
        ) as response:
            for raw in response.iter_lines(decode_unicode=True):
                if raw.startswith("event: end"):
                    return
                if raw.startswith("data: "):
                    followed.append(json.loads(raw[6:]))

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    done = wait_for(lambda: finished(stack, sha), 300, 0.5, "the build to finish")
    assert done.status == "succeeded", done.error
    follower.join(60)

    with stack.database.session_scope() as session:
        deployment = session.scalar(select(Deployment).where(Deployment.build_id == done.id))
        assert deployment is not None
        steps = [(s.name, s.status) for s in session.get(Build, done.id).steps]  # type: ignore[union-attr]
    assert steps == [
        (name, "succeeded")
        for name in ("clone", "build", "push", "upload_compose", "record_deployment")
    ]
    # One exchange per step boundary: claim clone, its token, then each step's finish
    # (claiming the next); nothing else but heartbeats.
    requests_of_build = counting.of_worker()
    assert len(requests_of_build) < 8, requests_of_build
    assert requests_of_build == [
        f"POST /v1/builds/{done.id}/steps/clone/claim",
        f"POST /v1/builds/{done.id}/git-token",
        *(f"POST /v1/builds/{done.id}/steps/{step}/finish" for step in STEPS),
    ]
    image = done.images["app"]
    repo_path = image["repository"].split("/", 1)[1]
    assert repo_path == "codertocat/hello-world"
    assert registry.manifest_digest(repo_path, image["tag"]) == image["digest"]

    stored = requests.get(
        f"{stack.url}/v1/builds/{done.id}/logs", headers=stack_read_headers(stack), timeout=10
    ).json()
    assert stored["complete"] is True
    assert any(line.startswith("==> clone") for line in stored["lines"])
    assert any("pushing" in line for line in stored["lines"])
    assert any(line.startswith("==> build") for line in followed)
    tokens = [t.token for t in stack.github.state.tokens]
    assert tokens and not any(t in line for t in tokens for line in stored["lines"])
    registry.delete_image(repo_path, image["tag"])


def stack_read_headers(stack: Stack) -> dict[str, str]:
    from controlplane.services import tokens

    with stack.database.session_scope() as session:
        _row, secret = tokens.create_token(session, "e2e-reader", "read")
    return {"Authorization": f"Bearer {secret}"}


def test_two_quick_pushes_deploy_only_the_second(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    install(stack, base_image)
    first = push(stack, {"index.html": "one\n"}, 1_700_000_100)
    second = push(stack, {"index.html": "two\n"}, 1_700_000_200)
    wait_for(lambda: build_of(stack, second), 60, what="the second build")
    stack.start_buildworker("build-quick")
    assert wait_for(lambda: finished(stack, second), 300, 0.5).status == "succeeded"
    cancelled = wait_for(lambda: finished(stack, first), 60)
    assert cancelled.status == "cancelled" and "superseded" in (cancelled.error or "")
    # On GitHub, through the control worker: the cancelled build does not stay pending.
    state = stack.github.state

    def ended() -> bool:
        runs = [r for r in state.check_runs if r.external_id == str(cancelled.id)]
        status = [s.state for s in state.statuses if s.sha == first]
        return bool(runs) and runs[-1].conclusion == "cancelled" and status[-1:] == ["error"]

    wait_for(ended, 120, 0.5, "the cancelled build's Check Run and commit status")
    assert [r.head_sha for r in state.check_runs if r.name == "Portside"].count(second) == 1
    with stack.database.session_scope() as session:
        deployed = [d.build.commit_sha for d in session.scalars(select(Deployment))]
    assert deployed == [second]
    image = build_of(stack, second).images["app"]  # type: ignore[union-attr]
    registry.delete_image(image["repository"].split("/", 1)[1], image["tag"])


def test_a_build_worker_killed_mid_build_is_replaced_without_duplicates(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    install(stack, base_image)
    stack.start_beat()
    doomed = stack.start_buildworker("build-doomed")
    sha = push(
        stack,
        {"Dockerfile": f"FROM {base_image}\nRUN sleep 8\nCOPY index.html /www/index.html\n"},
        1_700_000_300,
    )

    def building() -> bool:
        build = build_of(stack, sha)
        return bool(build) and any(
            s.name == "build" and s.status == "running"
            for s in steps_of(stack, build.id)  # type: ignore[union-attr]
        )

    wait_for(building, 120, 0.2, "the build step to start")
    doomed.kill()
    doomed.process.wait(10)
    stack.start_buildworker("build-rescuer")
    done = wait_for(lambda: finished(stack, sha), 300, 0.5, "the build to be taken over")
    assert done.status == "succeeded", done.error
    assert done.attempt == 2 and done.worker.startswith("build-rescuer")
    with stack.database.session_scope() as session:
        assert len(list(session.scalars(select(Deployment)))) == 1
        assert len(list(session.scalars(select(Build)))) == 1
    image = done.images["app"]
    registry.delete_image(image["repository"].split("/", 1)[1], image["tag"])


def steps_of(stack: Stack, build_id: int) -> list[Any]:
    with stack.database.session_scope() as session:
        build = session.get(Build, build_id)
        return list(build.steps) if build else []


def test_compose_repository_yields_a_pinned_compose_artifact(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    install(stack, base_image)
    dockerfile = f"FROM {base_image}\nCOPY . /srv\n"
    compose = (
        "services:\n"
        "  web:\n    build: ./web\n    ports: ['8080']\n"
        "  worker:\n    build:\n      context: ./worker\n"
        f"  cache:\n    image: {base_image}\n"
    )
    stack.start_buildworker("build-compose")
    sha = push(
        stack,
        {
            "compose.yaml": compose,
            "web/Dockerfile": dockerfile,
            "web/index.html": "web\n",
            "worker/Dockerfile": dockerfile,
            "worker/run.sh": "echo work\n",
        },
        1_700_000_400,
    )
    done = wait_for(lambda: finished(stack, sha), 300, 0.5, "the compose build")
    assert done.status == "succeeded", done.error
    assert set(done.images) == {"web", "worker"}
    assert done.routed_service == "web"  # the one service published with ports:
    pinned = yaml.safe_load(done.compose or "")
    for name in ("web", "worker"):
        image = done.images[name]
        assert pinned["services"][name]["image"] == f"{image['repository']}@{image['digest']}"
        assert "build" not in pinned["services"][name]
        assert image["repository"].endswith(f"codertocat/hello-world-{name}")
        repo_path = image["repository"].split("/", 1)[1]
        assert registry.manifest_digest(repo_path, image["tag"]) == image["digest"]
        registry.delete_image(repo_path, image["tag"])
    assert pinned["services"]["cache"]["image"] == base_image
