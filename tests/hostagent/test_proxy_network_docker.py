"""Routing against the real engine: a compose file's routed and published services join
the proxy network Traefik watches (and keep their project's), an ``expose``-only one does
not, a single container runs on it, and a stand-in for Traefik on that network reaches
each by the port in its labels."""

from __future__ import annotations

import os
from typing import Any

import pytest

from contracts.compose_routes import published_routes, routed_service
from contracts.yamlsafe import load_yaml
from hostagent import labels as lbl
from hostagent.agent import AgentState, run_once
from hostagent.apply import Applier
from tests.hostagent.test_apply_docker import (
    PUBLISH,
    FakeSource,
    app_env,
    desired,
    images,
    managed,
    only,
    uid,
)

__all__ = ["images", "uid"]  # fixtures, used by name

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_cleanup")]

COMPOSE = """
x-portside:
  route: frontend
services:
  frontend:
    image: {frontend}
    command: ["httpd", "-f", "-p", "3000", "-h", "/www"]
    expose: ["3000"]
  api:
    image: {api}
    command: ["httpd", "-f", "-p", "8000", "-h", "/www"]
    ports: ["8000"]
  db:
    image: {db}
    command: ["httpd", "-f", "-p", "5432", "-h", "/www"]
    expose: ["5432"]
"""


def shop(name: str, compose: str) -> dict[str, Any]:
    """The environment as the control plane renders it: route and routes from the file."""
    document = load_yaml(compose)
    domain = f"{name}.example.com"
    return {
        **app_env(name, "unused", 1),
        "mode": "compose",
        "image": None,
        "compose": compose,
        "port": 3000,
        "routed_service": routed_service(document),
        "routes": [
            {"service": r.service, "port": r.port, "domains": [f"{r.label}.{domain}"]}
            for r in published_routes(document, routed_service(document))
        ],
    }


def fetch_from(container: Any, host: str, port: str) -> str | None:
    """The body ``container`` gets for ``GET /`` from ``host:port``; None when it cannot
    connect. (The base image's busybox wget crashes on this engine; nc does not.)"""
    # stdin stays open a moment: nc may stop at its end of input before the answer.
    request = '(printf "GET / HTTP/1.0\\r\\n\\r\\n"; sleep 1) | timeout 10 nc "$0" "$1"'
    code, output = container.exec_run(["sh", "-c", request, host, port])
    head, _, body = bytes(output).decode().partition("\r\n\r\n")
    return body if code == 0 and head.startswith("HTTP/1.") else None


def test_routed_containers_join_the_proxy_network_and_nothing_else_does(
    docker_client, images, base_image, tmp_path, uid
):
    host, name, single = f"host-{uid}", f"shop-{uid}", f"app-{uid}"
    network = f"portside-test-proxy-{uid}"
    frontend_image = images("fe", page="frontend")
    compose = COMPOSE.format(
        frontend=frontend_image, api=images("api", page="api"), db=images("db")
    )
    # Unlabelled, so no concurrent session's cleanup of io.portside.* takes it; removed below.
    proxy = docker_client.networks.create(network, driver="bridge")
    applier = Applier(
        docker_client,
        tmp_path / "state",
        publish_host=PUBLISH,
        proxy_network=network,
        compose_command_override=os.environ.get("PORTSIDE_COMPOSE_COMMAND", "").split() or None,
        stop_timeout=2,
        poll_seconds=0.2,
    )
    agent = AgentState(applier, publish_host=PUBLISH)
    stand_in: Any = None
    try:
        # Traefik's stand-in: a container on the proxy network only.
        stand_in = docker_client.containers.run(
            base_image, ["sleep", "600"], network=network, detach=True
        )
        source = FakeSource(desired(host, shop(name, compose), app_env(single, frontend_image, 2)))
        report = run_once(agent, source).report
        for environment in (name, single):
            status = only(report, environment)
            assert status["state"] == "running" and status["healthy"] is True, status

        # A single container is routed too: it runs on the proxy network.
        (app,) = [c for c in managed(docker_client, host) if c.labels[lbl.ENVIRONMENT] == single]
        assert app.labels["traefik.docker.network"] == network
        assert list(app.attrs["NetworkSettings"]["Networks"]) == [network]
        port = app.labels[f"traefik.http.services.{single}.loadbalancer.server.port"]
        assert fetch_from(stand_in, app.name, port) == "frontend"

        containers = {
            c.labels[lbl.COMPOSE_SERVICE]: c
            for c in managed(docker_client, host)
            if c.labels[lbl.ENVIRONMENT] == name
        }
        assert sorted(containers) == ["api", "db", "frontend"]
        on_proxy = {
            service
            for service, c in containers.items()
            if network in c.attrs["NetworkSettings"]["Networks"]
        }
        assert on_proxy == {"frontend", "api"}
        for container in containers.values():  # each keeps its project's network
            assert f"{name}_default" in container.attrs["NetworkSettings"]["Networks"]
        assert not any(key.startswith("traefik.") for key in containers["db"].labels)

        frontend, api = containers["frontend"].labels, containers["api"].labels
        assert frontend[f"traefik.http.routers.{name}.rule"] == f"Host(`{name}.example.com`)"
        assert api[f"traefik.http.routers.{name}-api.rule"] == f"Host(`api.{name}.example.com`)"
        for service, router, page in (
            ("frontend", name, "frontend"),
            ("api", f"{name}-api", "api"),
        ):
            labels = containers[service].labels
            assert labels["traefik.docker.network"] == network
            port = labels[f"traefik.http.services.{router}.loadbalancer.server.port"]
            assert fetch_from(stand_in, containers[service].name, port) == page, service
        # The database answers its project's network (the frontend asks), not the proxy's.
        db = containers["db"].name
        assert fetch_from(stand_in, db, "5432") is None
        assert fetch_from(containers["frontend"], db, "5432") == "db"
    finally:
        if stand_in is not None:
            stand_in.remove(force=True)
        applier.compose_down(name, remove_volumes=True)
        for container in managed(docker_client, host):
            container.remove(force=True)
        proxy.remove()
