"""End to end with two agents: ``replicas: 2`` on two hosts runs four containers, a new
version rolls one replica at a time on each host, and both agents' reports make the
environment running.

Both agents share the test engine; each sees only the containers labelled with its host.
They publish on different loopback addresses (as two servers would have), which also keeps
their containers' names apart on the one engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import docker
import pytest
import requests
from sqlalchemy import select

from controlplane.models import Environment
from controlplane.services import hosts
from tests.fixtures.stack import Stack, wait_for
from tests.hostagent.test_agent_e2e import deployment_status
from tests.tasks.test_pipeline_e2e import finished, install, push

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HOSTS = {"web-1": "127.0.0.1", "web-2": "127.0.0.2"}


def replicas(client: docker.DockerClient) -> list[Any]:
    """The environment's containers on this test's two hosts, running or not."""
    found = []
    for host in HOSTS:
        labels = ["io.portside.environment=hello", f"io.portside.host={host}"]
        # ignore_removed: a replica retired between Docker's listing and its inspection.
        found += client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
    return found


def answering(container: Any, text: str = "") -> bool:
    """Running and answering HTTP (with ``text`` in the body) on its published port."""
    if container.status != "running":
        return False
    bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get("8080/tcp") or []
    if not bindings:
        return False
    address = f"{bindings[0]['HostIp']}:{bindings[0]['HostPort']}"
    try:
        response = requests.get(f"http://{address}/", timeout=1)
    except requests.RequestException:
        return False
    return response.status_code == 200 and text in response.text


def serving_everywhere(client: docker.DockerClient, text: str) -> bool:
    """Exactly two containers on each host, each answering with ``text``."""
    current = replicas(client)
    per_host = [sum(c.labels["io.portside.host"] == h for c in current) for h in HOSTS]
    return per_host == [2, 2] and all(answering(c, text) for c in current)


class HealthyCounter:
    """Counts, from Docker and HTTP, the replicas that answer, until stopped; keeps the
    lowest count and every container id seen answering."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.lowest: int | None = None
        self.samples = 0
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthyCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            healthy = [c for c in replicas(self.client) if answering(c)]
            self.seen |= {c.id for c in healthy}
            self.lowest = len(healthy) if self.lowest is None else min(self.lowest, len(healthy))
            self.samples += 1
            self._stop.wait(0.1)


def environment_state(stack: Stack) -> tuple[str, str | None] | None:
    with stack.database.session_scope() as session:
        env = session.scalar(select(Environment).where(Environment.name == "hello"))
        return (env.status, env.address) if env is not None else None


def until(check: Callable[[], object], what: str, timeout: float = 180) -> Any:
    return wait_for(check, timeout, 0.5, what)


def test_two_replicas_on_two_hosts_roll_without_losing_more_than_one(
    docker_cleanup: None,  # first: it removes the containers after the agents have stopped
    stack: Stack,
    base_image: str,
    docker_client: docker.DockerClient,
    registry: Any,
) -> None:
    install(stack, base_image)
    with stack.database.session_scope() as session:
        hosts.create_host(session, "web-2", "test")
    response = requests.patch(
        f"{stack.url}/v1/services/1",
        json={"replicas": 2, "hosts": list(HOSTS)},
        headers=stack.admin_headers,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["hosts"] == list(HOSTS) and response.json()["replicas"] == 2
    stack.start_buildworker("build-replicas")
    for host, address in HOSTS.items():
        stack.start_agent(host, {"PORTSIDE_AGENT_PUBLISH_HOST": address})

    first = push(stack, {"index.html": "first version\n"}, 1_700_003_000)
    assert until(lambda: finished(stack, first), "the first build").status == "succeeded"
    until(lambda: serving_everywhere(docker_client, "first version"), "four replicas")
    until(lambda: deployment_status(stack, first) == "active", "activation")
    status, address = environment_state(stack) or ("", None)
    assert status == "running" and address and address.startswith("127.0.0.1:")
    old = {c.id for c in replicas(docker_client)}
    assert len(old) == 4

    with HealthyCounter(docker_client) as counter:
        second = push(stack, {"index.html": "second version\n"}, 1_700_003_100)
        assert until(lambda: finished(stack, second), "the second build").status == "succeeded"
        until(lambda: serving_everywhere(docker_client, "second version"), "the new replicas")
        until(lambda: deployment_status(stack, second) == "active", "the second activation")
    assert deployment_status(stack, first) == "superseded"
    assert (environment_state(stack) or ("", None))[0] == "running"
    new = {c.id for c in replicas(docker_client)}
    assert len(new) == 4 and not new & old
    # The counter watched the whole switch: old and new replicas answering, never < 3.
    assert counter.samples > 10 and old <= counter.seen and new <= counter.seen
    assert counter.lowest is not None and counter.lowest >= 3, counter.lowest
