"""CPU and memory limits in compose mode, as the engine applies them: every service of a
production compose environment runs within the service's limits (or the smaller ones
its file asks for, as ``mem_limit``/``cpus`` or ``deploy.resources.limits``), and a
change of the service's limits reaches the running containers."""

from __future__ import annotations

from typing import Any

import pytest

from hostagent import labels as lbl
from hostagent.agent import run_once
from tests.hostagent.test_apply_docker import (
    HTTPD,
    FakeSource,
    agent,
    app_env,
    desired,
    images,
    managed,
    only,
    uid,
)

__all__ = ["agent", "images", "uid"]  # fixtures, used by name

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_cleanup")]

MIB = 1024 * 1024
COMPOSE = """
services:
  web:
    image: {image}
    command: {httpd}
  worker:
    image: {image}
    command: ["sh", "-c", "sleep 3600"]
    deploy:
      resources:
        limits:
          cpus: "0.25"
          memory: 32m
  cache:
    image: {image}
    command: ["sh", "-c", "sleep 3600"]
    mem_limit: 48m
"""


def production_stack(
    name: str, image: str, deployment_id: int, cpus: float, memory: str
) -> dict[str, Any]:
    return {
        **app_env(name, image, deployment_id),
        "image": None,
        "mode": "compose",
        "compose": COMPOSE.format(image=image, httpd=HTTPD),
        "routed_service": "web",
        "resources": {"cpus": cpus, "memory": memory, "restart": "unless-stopped"},
    }


def limits_by_service(docker_client: Any, host: str) -> dict[str, tuple[int, int]]:
    """(NanoCpus, Memory) of each running compose service, from ``docker inspect``."""
    result = {}
    for container in managed(docker_client, host):
        container.reload()
        config = container.attrs["HostConfig"]
        result[container.labels[lbl.COMPOSE_SERVICE]] = (config["NanoCpus"], config["Memory"])
    return result


def test_a_production_compose_app_runs_within_its_service_limits(docker_client, images, agent, uid):
    host, name = f"host-{uid}", f"limited-{uid}"
    image = images("v1")
    source = FakeSource(desired(host, production_stack(name, image, 1, 0.5, "64m")))
    try:
        status = only(run_once(agent, source).report, name)
        assert status["state"] == "running", status

        assert limits_by_service(docker_client, host) == {
            "web": (500_000_000, 64 * MIB),  # the service's limits
            "worker": (250_000_000, 32 * MIB),  # what its file asks, below them
            "cache": (500_000_000, 48 * MIB),
        }

        # The service's limits change: the containers are recreated with the new ones.
        source.state = desired(host, production_stack(name, image, 1, 1.5, "128m"), generation=2)
        status = only(run_once(agent, source).report, name)
        assert status["state"] == "running", status

        assert limits_by_service(docker_client, host) == {
            "web": (1_500_000_000, 128 * MIB),
            "worker": (250_000_000, 32 * MIB),
            "cache": (1_500_000_000, 48 * MIB),
        }
    finally:
        agent.applier.compose_down(name, remove_volumes=True)
