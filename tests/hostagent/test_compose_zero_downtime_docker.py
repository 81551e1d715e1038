"""Zero-downtime compose deploys on the real engine: the routed service is switched beside
its old container while a client keeps requesting it, the other services follow
``depends_on``, and a new version that fails its health check leaves the old one serving.

The route is what the agent publishes: Traefik's router labels on each container of the
routed service and, on loopback, the port published for it. The client stands in for the
proxy: every 50 ms it looks up the running containers that carry the environment's router
(as Traefik's Docker provider does) and asks each in turn until one answers (as a proxy
retries the next server); a tick in which none answers is a failed request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from hostagent import labels as lbl
from hostagent.agent import run_once
from tests.hostagent.factories import env_body
from tests.hostagent.test_apply_docker import (
    HTTPD,
    FakeSource,
    agent,
    desired,
    get,
    images,
    json_list,
    managed,
    only,
    uid,
)

__all__ = ["agent", "images", "uid"]  # fixtures, used by name

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_cleanup")]

TICK = 0.05
COMPOSE = """
services:
  db:
    image: {other}
    command: ["sh", "-c", "sleep 3600"]
  web:
    image: {web}
    command: {command}
    depends_on: [db]
  worker:
    image: {other}
    command: ["sh", "-c", "sleep 3600"]
    depends_on: [web]
"""


def stack(
    name: str, web: str, other: str, deployment_id: int, *, command: str = "", timeout: int = 30
) -> Any:
    """Three services, web routed; ``command`` (a JSON list) replaces web's httpd."""
    return env_body(
        name,
        mode="compose",
        image=None,
        compose=COMPOSE.format(web=web, other=other, command=command or json_list(HTTPD)),
        routed_service="web",
        port=8080,
        deployment_id=deployment_id,
        domains=[f"{name}.example.com"],
        health_check={"path": "/", "timeout": timeout},
        resources={"cpus": 0.5, "memory": "64m", "restart": "unless-stopped"},
    )


@dataclass
class RouteClient:
    """Requests the routed service every 50 ms through the route the agent publishes."""

    docker_client: Any
    environment: str
    host: str
    answers: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def servers(self) -> list[str]:
        """``127.0.0.1:port`` of each running container carrying the router."""
        summaries = self.docker_client.api.containers(
            filters={
                "label": [
                    f"traefik.http.routers.{self.environment}.rule",
                    f"{lbl.HOST}={self.host}",
                ],
                "status": "running",
            }
        )
        return [
            f"{port['IP']}:{port['PublicPort']}"
            for summary in summaries
            for port in summary.get("Ports") or []
            if port.get("PrivatePort") == 8080 and port.get("PublicPort")
        ]

    def tick(self, turn: int) -> None:
        servers = self.servers()
        errors = []
        for index in range(len(servers)):
            server = servers[(turn + index) % len(servers)]
            try:
                response = requests.get(f"http://{server}/", timeout=1)
            except requests.RequestException as exc:
                errors.append(f"{server}: {type(exc).__name__}")
                continue
            if response.status_code == 200:
                self.answers.append(response.text.strip())
                return
            errors.append(f"{server}: HTTP {response.status_code}")
        self.failures.append(f"tick {turn}: {errors or 'no server carries the route'}")

    def run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            self.tick(turn)
            turn += 1
            self._stop.wait(TICK)

    def __enter__(self) -> RouteClient:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while len(self.answers) + len(self.failures) < 5 and time.monotonic() < deadline:
            time.sleep(TICK)
        return self

    def __exit__(self, *exc_info: object) -> None:
        time.sleep(10 * TICK)  # a few requests after the deploy too
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)


def web_containers(docker_client, host: str) -> list[Any]:
    return [c for c in managed(docker_client, host) if c.labels[lbl.COMPOSE_SERVICE] == "web"]


def first_event(events: list[dict[str, Any]], container_id: str, status: str) -> int:
    return min(e["timeNano"] for e in events if e["id"] == container_id and e["status"] == status)


def test_the_routed_service_answers_throughout_a_compose_deploy(docker_client, images, agent, uid):
    host, name = f"host-{uid}", f"stack-{uid}"
    v1, v2, other = images("v1"), images("v2"), images("other")
    source = FakeSource(desired(host, stack(name, v1, other, 1)))
    try:
        status = only(run_once(agent, source).report, name)
        assert status["state"] == "running" and get(status["address"]) == "v1"
        old = {c.labels[lbl.COMPOSE_SERVICE]: c for c in managed(docker_client, host)}

        since = time.time() - 1
        source.state = desired(host, stack(name, v2, other, 2), generation=2)
        with RouteClient(docker_client, name, host) as client:
            status = only(run_once(agent, source).report, name)

        assert client.failures == []
        assert client.answers[0] == "v1" and client.answers[-5:] == ["v2"] * 5
        assert status["state"] == "running" and status["deployment_id"] == 2, status
        assert get(status["address"]) == "v2"
        new = {c.labels[lbl.COMPOSE_SERVICE]: c for c in managed(docker_client, host)}
        assert (
            sorted(new) == ["db", "web", "worker"] and len(web_containers(docker_client, host)) == 1
        )
        assert all(new[s].id != old[s].id for s in new)
        assert all(c.labels[lbl.DEPLOYMENT] == "2" for c in new.values())

        events = list(
            docker_client.events(
                since=int(since),
                until=int(time.time()) + 1,
                decode=True,
                filters={"type": "container", "label": f"{lbl.HOST}={host}"},
            )
        )
        new_web_start = first_event(events, new["web"].id, "start")
        old_web_die = first_event(events, old["web"].id, "die")
        # The new web started beside the old one, which stopped once the new one was healthy.
        assert new_web_start < old_web_die
        assert agent.applier.healthy_at[new["web"].name] * 1e9 < old_web_die
        # depends_on order: web's dependency before the new web, its dependent after the switch.
        assert first_event(events, new["db"].id, "start") < new_web_start
        assert old_web_die < first_event(events, new["worker"].id, "start")

        assert run_once(agent, source).outcomes == {}  # converged: nothing more to do
    finally:
        agent.applier.compose_down(name, remove_volumes=True)


def test_a_new_routed_version_failing_its_health_check_leaves_the_old_one_serving(
    docker_client, images, agent, uid
):
    host, name = f"host-{uid}", f"stack-{uid}"
    good, other = images("good"), images("other")
    silent = images("silent")
    never_listens = json_list(["sh", "-c", "echo never-listens; sleep 3600"])
    source = FakeSource(desired(host, stack(name, good, other, 1, timeout=5)))
    try:
        address = only(run_once(agent, source).report, name)["address"]
        (old_web,) = web_containers(docker_client, host)

        source.state = desired(
            host, stack(name, silent, other, 2, command=never_listens, timeout=5), generation=2
        )
        with RouteClient(docker_client, name, host) as client:
            status = only(run_once(agent, source).report, name)

        assert client.failures == [] and set(client.answers) == {"good"}
        assert status["state"] == "failed" and status["healthy"] is False
        assert status["deployment_id"] == 2
        assert "was not healthy within 5 s" in status["error"], status["error"]
        assert "never-listens" in status["logs"]
        assert status["address"] == address and get(address) == "good"
        assert [c.id for c in web_containers(docker_client, host)] == [old_web.id]

        # Not retried every tick: the next pass does nothing and still reports the failure.
        later = run_once(agent, source)
        assert later.outcomes == {} and only(later.report, name)["state"] == "failed"
        assert get(address) == "good"
    finally:
        agent.applier.compose_down(name, remove_volumes=True)
