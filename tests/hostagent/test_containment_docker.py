"""The agent's last line against the real engine: refused compose files start nothing and
harm no other environment, its files are out of reach, previews are limited, and only the
agent's own routing labels and published port reach the containers."""

from __future__ import annotations

import os
import stat
from typing import Any

import pytest

from hostagent import labels as lbl
from hostagent.agent import AgentState, run_once
from tests.hostagent.test_apply_docker import (
    HTTPD,
    FakeSource,
    agent,
    app_env,
    desired,
    get,
    images,
    managed,
    only,
    uid,
)

__all__ = ["agent", "images", "uid"]  # fixtures, used by name

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_cleanup")]

GOOD = """
services:
  web:
    image: {image}
    command: {httpd}
    labels:
      app.example/team: web
    ports: ["8080"]
  worker:
    image: {image}
    command: ["sh", "-c", "sleep 3600"]
    ports: ["9000/tcp"]
    volumes: ["data:/data"]
volumes:
  data: {{}}
"""

REFUSED = """
services:
  web:
    image: {image}
    command: {httpd}
    privileged: true
    cap_add: [SYS_MODULE]
    pid: host
    volumes: [".:/agent", "/:/host"]
    labels:
      traefik.http.routers.steal.rule: Host(`prod.example.com`)
"""

ROUTING_LABELS = """
services:
  web:
    image: {image}
    command: {httpd}
    labels:
      traefik.http.routers.steal.rule: Host(`prod.example.com`)
      traefik.http.routers.steal.priority: "10000"
      io.portside.environment: someone-else
      com.docker.compose.project: someone-else
      app.example/kept: "yes"
"""


def app(name: str, image: str, deployment_id: int, **changes: Any) -> dict[str, Any]:
    """A single-container environment as test_apply_docker makes them, with ``changes``."""
    return {**app_env(name, image, deployment_id), **changes}


def stack(
    name: str, compose: str, image: str, deployment_id: int, **changes: Any
) -> dict[str, Any]:
    """A compose environment routed to its ``web`` service."""
    body = app(
        name,
        image,
        deployment_id,
        mode="compose",
        compose=compose.format(image=image, httpd=HTTPD),
        routed_service="web",
        **changes,
    )
    return {**body, "image": None}


def down(agent_state: AgentState, *names: str) -> None:
    for name in names:
        agent_state.applier.compose_down(name, remove_volumes=True)


def test_a_refused_compose_file_starts_nothing_and_the_others_converge(
    docker_client, images, agent, uid
):
    host = f"host-{uid}"
    good, bad, plain = f"good-{uid}", f"bad-{uid}", f"app-{uid}"
    image = images("v1")
    source = FakeSource(
        desired(
            host,
            stack(good, GOOD, image, 1),
            stack(bad, REFUSED, image, 2, kind="preview"),
            app(plain, image, 3),
        )
    )
    try:
        result = run_once(agent, source)
        refused = only(result.report, bad)
        assert refused["state"] == "refused" and refused["healthy"] is False
        for path in (
            "services.web.privileged",
            "services.web.cap_add",
            "services.web.pid",
            "services.web.volumes",
            "services.web.labels",
        ):
            assert path in refused["error"], path
        assert (
            docker_client.containers.list(
                all=True, filters={"label": f"{lbl.COMPOSE_PROJECT}={bad}"}
            )
            == []
        )
        assert not (agent.applier.state_dir / "compose" / bad).exists()
        for name in (good, plain):
            status = only(result.report, name)
            assert status["state"] == "running" and status["healthy"] is True, status
            assert get(status["address"]) == "v1"

        # Next tick: the refusal stands, nothing is retried, nothing else moves.
        again = run_once(agent, source)
        assert again.outcomes == {}
        assert only(again.report, bad)["state"] == "refused"
    finally:
        down(agent, good, bad)


def test_a_bad_environment_keeps_what_it_ran_while_the_others_move_on(
    docker_client, images, agent, uid
):
    host = f"host-{uid}"
    kept, other = f"kept-{uid}", f"other-{uid}"
    v1, v2 = images("v1"), images("v2")
    source = FakeSource(desired(host, app(kept, v1, 1), app(other, v1, 2)))
    run_once(agent, source)
    (before,) = [c for c in managed(docker_client, host) if c.labels[lbl.ENVIRONMENT] == kept]

    # A later snapshot where one environment does not even validate: it is not torn down.
    broken = app(kept, v2, 3, domains=["not a domain"])
    source.state = desired(host, broken, app(other, v2, 4), generation=2)
    result = run_once(agent, source)
    status = only(result.report, kept)
    assert status["state"] == "refused" and "not a valid host name" in status["error"]
    after = {c.labels[lbl.ENVIRONMENT]: c for c in managed(docker_client, host)}
    assert after[kept].id == before.id and after[kept].status == "running"
    assert after[other].labels[lbl.DEPLOYMENT] == "4"
    assert get(only(result.report, other)["address"]) == "v2"


def test_compose_files_are_private_and_never_followed(docker_client, images, agent, uid, tmp_path):
    host, name = f"host-{uid}", f"stack-{uid}"
    image = images("v1")
    state_dir = agent.applier.state_dir
    state_dir.mkdir(mode=0o755)
    os.chmod(state_dir, 0o755)  # noqa: S103 - the loose mode the agent must tighten
    directory = state_dir / "compose" / name
    directory.mkdir(parents=True)
    outside = tmp_path / "outside.yml"
    outside.write_text("precious\n")
    (directory / "docker-compose.yml").symlink_to(outside)
    source = FakeSource(desired(host, stack(name, GOOD, image, 1)))
    try:
        status = only(run_once(agent, source).report, name)
        assert status["state"] == "running", status
        assert outside.read_text() == "precious\n"
        for path in (state_dir, state_dir / "compose", directory):
            assert stat.S_IMODE(path.lstat().st_mode) == 0o700, path
        for file in ("docker-compose.yml", "portside.override.yml"):
            info = (directory / file).lstat()
            assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert list((state_dir / "empty").iterdir()) == []

        # A directory swapped for a symlink is refused, nothing is written through it.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        agent.applier.compose_down(name, remove_volumes=True)
        directory.symlink_to(elsewhere)
        source.state = desired(host, stack(name, GOOD, image, 2), generation=2)
        status = only(run_once(agent, source).report, name)
        assert status["state"] == "failed" and "cannot be opened safely" in status["error"]
        assert list(elsewhere.iterdir()) == []
    finally:
        if directory.is_symlink():
            directory.unlink()
        down(agent, name)


def test_compose_isolation_ports_volumes_and_labels(docker_client, images, agent, uid):
    host, name, labelled = f"host-{uid}", f"stack-{uid}", f"labels-{uid}"
    image = images("v1")
    source = FakeSource(
        desired(
            host,
            stack(name, GOOD, image, 1),
            # An admin allowed "labels" for production: the policy lets them through, the
            # agent still strips every routing label.
            stack(labelled, ROUTING_LABELS, image, 2, compose_allow=["labels"]),
        )
    )
    try:
        report = run_once(agent, source).report
        assert only(report, name)["state"] == "running"
        assert only(report, labelled)["state"] == "running", only(report, labelled)
        containers = {
            (c.labels[lbl.ENVIRONMENT], c.labels[lbl.COMPOSE_SERVICE]): c
            for c in managed(docker_client, host)
        }
        web, worker = containers[(name, "web")], containers[(name, "worker")]
        assert web.labels["app.example/team"] == "web"
        ports = web.attrs["NetworkSettings"]["Ports"]
        assert [b["HostIp"] for b in ports["8080/tcp"]] == ["127.0.0.1"]
        assert all(not bindings for bindings in worker.attrs["NetworkSettings"]["Ports"].values())
        assert "9000/tcp" in worker.attrs["Config"]["ExposedPorts"]
        mounts = worker.attrs["Mounts"]
        assert [(m["Type"], m["Name"]) for m in mounts] == [("volume", f"{name}_data")]

        stolen = containers[(labelled, "web")].labels
        assert stolen["app.example/kept"] == "yes"
        assert stolen[lbl.ENVIRONMENT] == labelled
        assert stolen[lbl.COMPOSE_PROJECT] == labelled
        assert not any(key.startswith("traefik.http.routers.steal") for key in stolen)
        assert stolen[f"traefik.http.routers.{labelled}.rule"] == f"Host(`{labelled}.example.com`)"
    finally:
        down(agent, name, labelled)


def test_previews_get_the_default_limits(docker_client, images, agent, uid):
    host, single, preview_stack = f"host-{uid}", f"pr-{uid}", f"prs-{uid}"
    image = images("v1")
    unlimited = {"cpus": None, "memory": None, "restart": "unless-stopped"}
    source = FakeSource(
        desired(
            host,
            app(single, image, 1, kind="preview", resources=unlimited),
            stack(preview_stack, GOOD, image, 2, kind="preview", resources=unlimited),
        )
    )
    try:
        report = run_once(agent, source).report
        for name in (single, preview_stack):
            assert only(report, name)["state"] == "running", only(report, name)
        containers = managed(docker_client, host)
        assert len(containers) == 3
        for container in containers:
            config = container.attrs["HostConfig"]
            # The single container has the whole budget; the stack's two services share it.
            shares = 1 if container.labels[lbl.ENVIRONMENT] == single else 2
            assert config["NanoCpus"] == 1_000_000_000 // shares, container.name
            assert config["Memory"] == 512 * 1024 * 1024 // shares, container.name
            assert config["PidsLimit"] == 256 // shares, container.name
    finally:
        down(agent, preview_stack)
