"""A real Prometheus (Debian's package, on loopback) scrapes an agent and answers a query
for the memory of a named environment; the agent's report carries the same usage; an
agent that cannot listen where it is told stops with one line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hostagent.agent import main, run_once
from hostagent.metrics import DOCKER_TIMEOUT, ContainerCollector, Sampler, serve
from tests.fixtures.processes import wait_until
from tests.hostagent.test_apply_docker import (  # noqa: F401 - agent, images and uid are fixtures
    FakeSource,
    agent,
    app_env,
    compose_env,
    desired,
    images,
    only,
    uid,
)
from tests.support.live import free_port

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_cleanup")]

MEMORY_LIMIT = 64 * 1024 * 1024  # app_env's "64m"
STOP_TIMEOUT = 30

CONFIG = """\
global:
  scrape_interval: 2s
  scrape_timeout: 2s
scrape_configs:
  - job_name: portside-agent
    static_configs:
      - targets: ["{target}"]
"""


class PrometheusServer:
    """``prometheus`` scraping ``target`` every 2 s, with a config and storage of its
    own under ``directory``, on a free loopback port; stopped (and waited for) by ``stop``."""

    def __init__(self, directory: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: scripts/test-env.sh up installs it")
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(CONFIG.format(target=target))
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of ``promql``; [] while Prometheus is not ready yet."""
        try:
            response = requests.get(
                f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": promql}, timeout=5
            )
        except requests.ConnectionError:
            return []
        if response.status_code == 503:  # still starting
            return []
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def diagnostics(self) -> str:
        """The scrape targets' health and Prometheus's own log, for a failed wait."""
        try:
            targets = requests.get(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=5).text
        except requests.RequestException as exc:
            targets = str(exc)
        return f"targets: {targets}\n{self.log.read_text()}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)


def test_prometheus_queries_an_environments_memory(images, agent, uid, tmp_path):  # noqa: F811
    host, app, stack = f"metrics-{uid}", f"m-{uid}", f"s-{uid}"
    image = images("v1", page=f"{uid} metrics")
    stats_client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], timeout=DOCKER_TIMEOUT)
    sampler = Sampler(stats_client)
    agent.sampler = sampler
    source = FakeSource(desired(host, app_env(app, image, 1), compose_env(stack, image, image, 2)))
    server = prometheus = None
    try:
        report = run_once(agent, source).report
        assert report is not None
        assert only(report, app)["state"] == "running" and only(report, stack)["state"] == "running"

        assert sampler.sample(30) is not None  # the one the agent's tick started
        server = serve(("127.0.0.1", free_port()), ContainerCollector(sampler, lambda: (0, 0)))
        text = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
        up = {
            (s.labels["environment"], s.labels["service"], s.value)
            for family in text_string_to_metric_families(text)
            if family.name == "portside_container_up"
            for s in family.samples
        }
        # The service's name for a single container, the compose service in a compose app.
        assert up == {(app, "hello", 1.0), (stack, "web", 1.0), (stack, "worker", 1.0)}

        prometheus = PrometheusServer(tmp_path, f"127.0.0.1:{server.port}")
        query = f'portside_container_memory_working_set_bytes{{environment="{app}"}}'

        def answered(promql: str, count: int = 1) -> list[dict[str, Any]]:
            """The query's series once there are ``count``; meanwhile the agent ticks on,
            as it would, repairing what another test run's clean-up may have removed."""
            found = prometheus.query(promql)
            if len(found) == count:
                return found
            run_once(agent, source, wait=None)
            return []

        def diagnostics() -> str:
            agent_text = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
            return f"{prometheus.diagnostics()}\nthe agent serves:\n{agent_text}"

        (series,) = wait_until(
            lambda: answered(query),
            f"Prometheus to answer {query}",
            timeout=60,
            interval=0.5,
            diagnostics=diagnostics,
        )
        labels = series["metric"]
        assert labels["job"] == "portside-agent"
        assert (labels["service"], labels["kind"], labels["host"]) == ("hello", "production", host)
        assert 0 < float(series["value"][1]) < MEMORY_LIMIT
        (limit,) = prometheus.query(f'portside_container_memory_limit_bytes{{environment="{app}"}}')
        assert float(limit["value"][1]) == MEMORY_LIMIT
        by_service = "sum by (service) (portside_container_memory_working_set_bytes{{{}}})"
        # Containers started a moment ago have no stats yet: a later scrape has them.
        compose_memory = wait_until(
            lambda: answered(by_service.format(f'environment="{stack}"'), 2),
            f"Prometheus to answer for both services of {stack}",
            timeout=60,
            interval=0.5,
            diagnostics=diagnostics,
        )
        assert sorted(s["metric"]["service"] for s in compose_memory) == ["web", "worker"]

        # The agent's report carries each environment's usage from the same samples.
        report = run_once(agent, source).report
        assert report is not None
        usage = only(report, app)["usage"]
        assert 0 < usage["memory_bytes"] < MEMORY_LIMIT and usage["restarts"] == 0
        assert only(report, stack)["usage"]["memory_bytes"] > 0
    finally:
        if prometheus is not None:
            prometheus.stop()
        if server is not None:
            server.close()
        sampler.close()
        stats_client.close()
        agent.applier.compose_down(stack, remove_volumes=True)


def test_an_agent_whose_metrics_address_is_taken_stops_with_one_line(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(
            {
                "PORTSIDE_URL": "http://127.0.0.1:9",
                "PORTSIDE_TOKEN": "unused",
                "PORTSIDE_AGENT_STATE_DIR": str(tmp_path),
                "PORTSIDE_AGENT_METRICS_ADDR": f"127.0.0.1:{port}",
                "DOCKER_HOST": os.environ["DOCKER_HOST"],
            }
        )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("portside agent: cannot serve metrics:") and err.count("\n") == 1
