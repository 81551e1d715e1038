"""Against the real engine: what reaches a container is what the agent checked, and no
more (review findings 1 and 9): no variable of the agent's own environment is
substituted into a compose file, and no routing label rides in on an image."""

from __future__ import annotations

from typing import Any

import pytest

from hostagent import labels as lbl
from hostagent.agent import run_once
from tests.hostagent.test_apply_docker import (
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
from tests.hostagent.test_containment_docker import GOOD, down, stack

__all__ = ["agent", "images", "uid"]  # fixtures, used by name

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_cleanup")]

LEAKY = """
services:
  web:
    image: {image}
    command: {httpd}
    environment:
      LEAK: "${{HOME}} $DOCKER_HOST"
      PRICE: "$$5"
"""


def env_of(container: Any) -> dict[str, str]:
    pairs = (item.partition("=") for item in container.attrs["Config"]["Env"])
    return {key: value for key, _, value in pairs}


def test_compose_values_reach_the_container_as_written(docker_client, images, agent, uid):
    host, name = f"host-{uid}", f"leak-{uid}"
    agent.applier.environ = {**agent.applier.environ, "HOME": "/home/agent-secret"}
    source = FakeSource(desired(host, stack(name, LEAKY, images("v1"), 1)))
    try:
        status = only(run_once(agent, source).report, name)
        assert status["state"] == "running", status
        (web,) = [c for c in managed(docker_client, host) if c.labels[lbl.ENVIRONMENT] == name]
        env = env_of(web)
        assert env["LEAK"] == "${HOME} $DOCKER_HOST"
        assert env["PRICE"] == "$5"
    finally:
        down(agent, name)


STEAL = (
    'LABEL traefik.enable=true traefik.http.routers.pwn.rule="Host(`victim.example.com`)" '
    "traefik.http.routers.pwn.priority=100000\n"
)


def test_an_image_with_routing_labels_is_refused_and_starts_nothing(
    docker_client, images, agent, uid
):
    host = f"host-{uid}"
    single, composed, good = f"pwn-{uid}", f"pwns-{uid}", f"good-{uid}"
    clean, stealing = images("v1"), images("pwn", extra=STEAL)
    source = FakeSource(
        desired(
            host,
            {**app_env(single, stealing, 1), "kind": "preview"},
            stack(composed, GOOD, stealing, 2, kind="preview"),
            stack(good, GOOD, clean, 3),
        )
    )
    try:
        report = run_once(agent, source).report
        for name in (single, composed):
            status = only(report, name)
            assert status["state"] == "refused", status
            assert "traefik.http.routers.pwn.rule" in status["error"], status
            assert lbl.BUILD not in status["error"]
        running = {c.labels[lbl.ENVIRONMENT] for c in managed(docker_client, host)}
        assert running == {good}
        assert (
            docker_client.containers.list(
                all=True, filters={"label": f"{lbl.COMPOSE_PROJECT}={composed}"}
            )
            == []
        )
        assert not (agent.applier.state_dir / "compose" / composed).exists()
        status = only(report, good)
        assert status["state"] == "running" and get(status["address"]) == "v1", status
    finally:
        down(agent, composed, good)
