"""The agent against the real engine: deploy, replace, fail safely, repair, remove."""

from __future__ import annotations

import io
import os
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from contracts.agentwire import AgentReport, DesiredState
from hostagent import labels as lbl
from hostagent.agent import AgentState, run_once
from hostagent.apply import Applier
from hostagent.client import Fetched
from hostagent.errors import TransientAgentError
from hostagent.snapshot import parse_desired_state
from tests.hostagent.factories import env_body, state_body

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_cleanup")]

PUBLISH = "127.0.0.1"
HTTPD = ["httpd", "-f", "-p", "8080", "-h", "/www"]


@dataclass
class FakeSource:
    """An in-process desired-state source: what the test sets is what the agent gets."""

    state: DesiredState | None = None
    fail: Exception | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    _served: DesiredState | None = None

    @property
    def last_good(self) -> DesiredState | None:
        return self._served

    def fetch(self, wait: float) -> Fetched:
        if self.fail is not None:
            raise self.fail
        assert self.state is not None
        changed = self.state != self._served
        self._served = self.state
        return Fetched(self.state, changed)

    def report(self, status: AgentReport) -> None:
        self.reports.append(status.to_json())


class RecordingApplier(Applier):
    """Notes when each new container passed its health check."""

    healthy_at: dict[str, float]

    def wait_healthy(self, name, spec):  # type: ignore[no-untyped-def]
        super().wait_healthy(name, spec)
        self.healthy_at = getattr(self, "healthy_at", {})
        self.healthy_at[name] = time.time()


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def images(docker_client, registry, base_image, uid) -> Iterator[Any]:
    """Build test images FROM the base, push them, and hand out ``repo@digest``."""
    pushed: list[tuple[str, str]] = []
    repo = f"portside-test/agent-{uid}"

    def build(tag: str, *, page: str = "", cmd: list[str] | None = None, extra: str = "") -> str:
        dockerfile = f"FROM {base_image}\nCOPY index.html /www/index.html\n{extra}"
        dockerfile += f"CMD {json_list(cmd or HTTPD)}\n"
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            for name, text in (("Dockerfile", dockerfile), ("index.html", page or tag)):
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        context.seek(0)
        repository = f"{registry.host}/{repo}"
        docker_client.images.build(
            fileobj=context,
            custom_context=True,
            tag=f"{repository}:{tag}",
            # Marked as the build worker marks what it builds (the one io.portside.* label
            # an image may carry for the agent, and what the cleanup looks for).
            labels={lbl.BUILD: "test"},
            rm=True,
            forcerm=True,  # no intermediate containers left behind, even on failure
        )
        for _line in docker_client.images.push(repository, tag, stream=True, decode=True):
            pass
        pushed.append((repo, tag))
        digest = registry.manifest_digest(repo, tag)
        assert digest is not None
        return f"{repository}@{digest}"

    yield build
    for repo_name, tag in pushed:
        registry.delete_image(repo_name, tag)


def json_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


@pytest.fixture
def agent(docker_client, tmp_path, uid) -> AgentState:
    applier = RecordingApplier(
        docker_client,
        tmp_path / "state",
        publish_host=PUBLISH,
        compose_command_override=os.environ.get("PORTSIDE_COMPOSE_COMMAND", "").split() or None,
        stop_timeout=2,
        poll_seconds=0.2,
    )
    return AgentState(applier, publish_host=PUBLISH)


def desired(host: str, *envs: dict[str, Any], generation: int = 1) -> DesiredState:
    body = state_body(*envs, generation=generation)
    body["host"] = host
    return parse_desired_state(body)


def app_env(name: str, image: str, deployment_id: int, **overrides: Any) -> dict[str, Any]:
    return env_body(
        name,
        image=image,
        deployment_id=deployment_id,
        domains=[f"{name}.example.com"],
        health_check={"path": "/", "timeout": 20},
        resources={"cpus": 0.5, "memory": "64m", "restart": "unless-stopped"},
        env={"GREETING": "hello", "SECRET": "s3cr3t"},
        **overrides,
    )


def managed(docker_client, host: str) -> list[Any]:
    return docker_client.containers.list(
        all=True, filters={"label": [lbl.ENVIRONMENT, f"{lbl.HOST}={host}"]}
    )


def get(address: str) -> str:
    response = requests.get(f"http://{address}/", timeout=5)
    response.raise_for_status()
    return response.text


def only(report: AgentReport | None, name: str) -> dict[str, Any]:
    """The one entry of ``report`` for ``name``, as the wire carries it."""
    assert report is not None
    (item,) = [env.to_json() for env in report.environments if env.name == name]
    return item


def test_deploy_then_replace_with_zero_downtime(docker_client, images, agent, uid):
    host, name = f"host-{uid}", f"app-{uid}"
    v1, v2 = images("v1"), images("v2")
    source = FakeSource(desired(host, app_env(name, v1, 1)))

    first = run_once(agent, source)
    status = only(first.report, name)
    assert status["state"] == "running" and status["healthy"] is True
    assert status["deployment_id"] == 1 and status["error"] is None
    assert get(status["address"]) == "v1"
    (old,) = managed(docker_client, host)
    labels = old.labels
    assert labels[lbl.ENVIRONMENT] == name and labels[lbl.DEPLOYMENT] == "1"
    assert labels[lbl.MANAGED] == "1" and len(labels[lbl.CONFIG_HASH]) == 64
    assert labels[f"traefik.http.routers.{name}.rule"] == f"Host(`{name}.example.com`)"
    assert labels[f"traefik.http.services.{name}.loadbalancer.server.port"] == "8080"
    host_config = old.attrs["HostConfig"]
    assert host_config["NanoCpus"] == 500_000_000
    assert host_config["Memory"] == 64 * 1024 * 1024
    assert host_config["RestartPolicy"]["Name"] == "unless-stopped"
    assert "SECRET=s3cr3t" in old.attrs["Config"]["Env"]

    # Nothing changes: nothing is done, nothing restarts.
    again = run_once(agent, source)
    assert again.outcomes == {} and [c.id for c in managed(docker_client, host)] == [old.id]

    since = time.time() - 1
    source.state = desired(host, app_env(name, v2, 2), generation=2)
    second = run_once(agent, source)
    status = only(second.report, name)
    assert status["state"] == "running" and status["deployment_id"] == 2
    assert get(status["address"]) == "v2"
    (new,) = managed(docker_client, host)
    assert new.id != old.id and new.name.startswith(f"{name}-2-")

    # Docker's own events: the old container died only after the new one was healthy.
    events = list(
        docker_client.events(
            since=int(since),
            until=int(time.time()) + 1,
            decode=True,
            filters={"type": "container", "label": f"{lbl.HOST}={host}"},
        )
    )
    new_start = min(e["timeNano"] for e in events if e["id"] == new.id and e["status"] == "start")
    old_die = min(e["timeNano"] for e in events if e["id"] == old.id and e["status"] == "die")
    assert new_start < old_die
    assert agent.applier.healthy_at[new.name] * 1e9 < old_die


def test_bad_image_keeps_the_old_one_serving(docker_client, images, agent, uid):
    host, name = f"host-{uid}", f"app-{uid}"
    good = images("good")
    bad = images("bad", cmd=["sh", "-c", "echo boom-at-start >&2; exit 3"])
    source = FakeSource(desired(host, app_env(name, good, 1)))
    status = only(run_once(agent, source).report, name)
    address = status["address"]

    source.state = desired(host, app_env(name, bad, 2), generation=2)
    result = run_once(agent, source)
    status = only(result.report, name)
    assert status["state"] == "failed" and status["healthy"] is False
    assert status["deployment_id"] == 2
    assert "exited with code" in status["error"]
    assert "boom-at-start" in status["logs"]
    (still,) = managed(docker_client, host)
    assert still.labels[lbl.DEPLOYMENT] == "1" and still.status == "running"
    assert get(address) == "good"

    # Not retried every tick: the next pass does nothing and still reports the failure.
    later = run_once(agent, source)
    assert later.outcomes == {}
    assert only(later.report, name)["state"] == "failed"

    # The control plane reverts to the previous deployment: all is well again.
    source.state = desired(host, app_env(name, good, 1), generation=3)
    status = only(run_once(agent, source).report, name)
    assert status["state"] == "running" and status["error"] is None
    assert agent.failures == {}


def test_drift_by_hand_is_repaired(docker_client, images, agent, uid):
    host, name = f"host-{uid}", f"app-{uid}"
    source = FakeSource(desired(host, app_env(name, images("v1"), 1)))
    run_once(agent, source)
    (first,) = managed(docker_client, host)

    first.remove(force=True)  # removed by hand
    status = only(run_once(agent, source).report, name)
    (second,) = managed(docker_client, host)
    assert second.id != first.id and status["state"] == "running"
    assert get(status["address"]) == "v1"

    second.kill()  # killed by hand: unless-stopped does not bring back a killed one
    second.reload()
    assert second.status != "running"
    status = only(run_once(agent, source).report, name)
    (third,) = managed(docker_client, host)
    assert third.id != second.id and third.status == "running"
    assert get(status["address"]) == "v1"


def test_missing_image_is_pulled_by_digest(docker_client, images, agent, uid):
    host, name = f"host-{uid}", f"app-{uid}"
    reference = images("pulled")
    docker_client.images.remove(docker_client.images.get(reference).id, force=True)
    source = FakeSource(desired(host, app_env(name, reference, 1)))
    status = only(run_once(agent, source).report, name)
    assert status["state"] == "running"
    assert get(status["address"]) == "pulled"
    assert docker_client.images.get(reference) is not None


def test_control_plane_down_keeps_reconciling_the_last_good_state(
    docker_client, images, agent, uid
):
    host, name = f"host-{uid}", f"app-{uid}"
    source = FakeSource(desired(host, app_env(name, images("v1"), 1)))
    run_once(agent, source)
    (first,) = managed(docker_client, host)
    first.remove(force=True)
    source.fail = TransientAgentError("control plane unreachable")
    result = run_once(agent, source)
    assert result.error is source.fail and agent.consecutive_errors == 1
    (second,) = managed(docker_client, host)
    assert second.status == "running"


def test_unlabelled_containers_are_left_alone(docker_client, base_image, agent, uid):
    host = f"host-{uid}"
    stranger = docker_client.containers.run(
        base_image, ["sleep", "300"], name=f"stranger-{uid}", detach=True
    )
    try:
        source = FakeSource(desired(host))  # complete and empty: remove everything of ours
        result = run_once(agent, source)
        assert result.outcomes == {}
        stranger.reload()
        assert stranger.status == "running"
    finally:
        stranger.remove(force=True)


def test_removed_environment_is_torn_down(docker_client, images, agent, uid):
    host, name = f"host-{uid}", f"app-{uid}"
    source = FakeSource(desired(host, app_env(name, images("v1"), 4, kind="preview")))
    run_once(agent, source)
    assert len(managed(docker_client, host)) == 1

    source.state = desired(host, generation=2)  # complete and empty
    result = run_once(agent, source)
    assert managed(docker_client, host) == []
    assert only(result.report, name) == {
        "name": name,
        "deployment_id": 4,
        "state": "removed",
        "healthy": False,
        "address": None,
        "error": None,
        "logs": None,
        "containers": [],
    }


COMPOSE = """
services:
  web:
    image: {web}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
  worker:
    image: {worker}
    command:
      - sh
      - -c
      - while true; do wget -q -O /dev/null http://web:8080/ || true; sleep 1; done
"""


def compose_env(name: str, web: str, worker: str, deployment_id: int) -> dict[str, Any]:
    return env_body(
        name,
        mode="compose",
        image=None,
        compose=COMPOSE.format(web=web, worker=worker),
        routed_service="web",
        port=8080,
        deployment_id=deployment_id,
        domains=[f"{name}.example.com"],
        health_check={"path": "/", "timeout": 30},
        kind="preview",
        env={"PRICE": "$5"},
    )


def project_leftovers(docker_client, name: str) -> dict[str, list[Any]]:
    label = f"com.docker.compose.project={name}"
    return {
        "containers": docker_client.containers.list(all=True, filters={"label": label}),
        "networks": docker_client.networks.list(filters={"label": label}),
        "volumes": docker_client.volumes.list(filters={"label": label}),
    }


def test_compose_app_up_update_down(docker_client, images, agent, uid):
    host, name = f"host-{uid}", f"stack-{uid}"
    v1, v2 = images("v1"), images("v2")
    source = FakeSource(desired(host, compose_env(name, v1, v1, 1)))
    try:
        status = only(run_once(agent, source).report, name)
        assert status["state"] == "running", status
        assert status["healthy"] is True
        assert get(status["address"]) == "v1"
        containers = managed(docker_client, host)
        services = sorted(c.labels[lbl.COMPOSE_SERVICE] for c in containers)
        assert services == ["web", "worker"]
        web = next(c for c in containers if c.labels[lbl.COMPOSE_SERVICE] == "web")
        assert f"traefik.http.routers.{name}.rule" in web.labels
        assert "PRICE=$5" in web.attrs["Config"]["Env"]

        assert run_once(agent, source).outcomes == {}  # converged: nothing to do

        source.state = desired(host, compose_env(name, v2, v1, 2), generation=2)
        status = only(run_once(agent, source).report, name)
        assert status["state"] == "running" and status["deployment_id"] == 2
        assert get(status["address"]) == "v2"

        # A service removed by hand comes back.
        worker = next(
            c for c in managed(docker_client, host) if c.labels[lbl.COMPOSE_SERVICE] == "worker"
        )
        worker.remove(force=True)
        status = only(run_once(agent, source).report, name)
        assert status["state"] == "running"
        assert len(managed(docker_client, host)) == 2

        source.state = desired(host, generation=3)
        result = run_once(agent, source)
        assert only(result.report, name)["state"] == "removed"
        assert project_leftovers(docker_client, name) == {
            "containers": [],
            "networks": [],
            "volumes": [],
        }
        assert not (agent.applier.state_dir / "compose" / name).exists()
    finally:
        agent.applier.compose_down(name, remove_volumes=True)
