"""Container usage from Docker's stats, a slow engine holding up neither a scrape nor
the agent's tick (an engine that answers when the test lets it; the real one is in
test_metrics_docker.py), and deploy/prometheus.yml as promtool checks it."""

from __future__ import annotations

import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hostagent import labels as lbl
from hostagent.agent import AgentState, run_once
from hostagent.apply import Applier
from hostagent.metrics import ContainerCollector, Sampler, usage_from_stats
from tests.fixtures.docker import unavailable
from tests.hostagent.factories import desired, env_body
from tests.hostagent.test_agent import EmptyEngine, ScriptedSource

MIB = 1024 * 1024
DEPLOY_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "prometheus.yml"
TOKEN_PATH = "/etc/prometheus/portside-metrics-token"


def stats(cpu_ns: int, usage: int, inactive: dict[str, int], limit: int) -> dict[str, Any]:
    return {
        "cpu_stats": {"cpu_usage": {"total_usage": cpu_ns}},
        "memory_stats": {"usage": usage, "stats": inactive, "limit": limit},
        "networks": {
            "eth0": {"rx_bytes": 100, "tx_bytes": 10},
            "eth1": {"rx_bytes": 5, "tx_bytes": 1},
        },
    }


def test_usage_under_cgroup_v1_and_v2():
    v1 = usage_from_stats(stats(2_500_000_000, 10 * MIB, {"total_inactive_file": MIB}, 64 * MIB))
    assert v1.cpu_seconds == 2.5
    assert v1.memory_working_set == 9 * MIB
    assert v1.memory_limit == 64 * MIB
    assert (v1.receive_bytes, v1.transmit_bytes) == (105, 11)
    v2 = usage_from_stats(stats(0, 10 * MIB, {"inactive_file": 2 * MIB}, 64 * MIB))
    assert v2.memory_working_set == 8 * MIB
    assert usage_from_stats({}).memory_working_set == 0  # a container that just stopped


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class SlowApi:
    """Answers stats only once ``answer`` is set; counts the stats calls."""

    answer: threading.Event = field(default_factory=threading.Event)
    calls: int = 0

    def containers(self, all: bool, filters: dict[str, Any]) -> list[dict[str, Any]]:
        assert f"{lbl.HOST}=web-1" in filters["label"]
        return [{"Id": "c1"}]

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return {
            "Name": "/hello-1",
            "RestartCount": 2,
            "State": {"Status": "running", "Health": {"Status": "healthy"}},
            "Config": {
                "Labels": {
                    lbl.ENVIRONMENT: "hello",
                    lbl.KIND: "production",
                    lbl.HOST: "web-1",
                }
            },
        }

    def stats(self, container_id: str, stream: bool, one_shot: bool) -> dict[str, Any]:
        self.calls += 1
        assert self.answer.wait(30), "the test never let the engine answer"
        return stats(self.calls * 1_000_000_000, 10 * MIB, {}, 64 * MIB)


@dataclass
class SlowEngine:
    api: SlowApi = field(default_factory=SlowApi)


def test_a_slow_engine_holds_up_neither_a_scrape_nor_a_tick(tmp_path: Path):
    engine, clock = SlowEngine(), Clock()
    sampler = Sampler(engine, clock=clock)
    try:
        assert sampler.sample(1.0) is None  # nothing known yet: no host
        sampler.track(desired())
        assert sampler.sample(0.2) is None  # Docker has not answered: nothing to show

        engine.api.answer.set()
        first = sampler.sample(30)
        assert first is not None
        (reading,) = first.readings
        assert (reading.environment, reading.service, reading.kind) == (
            "hello",
            "hello",
            "production",
        )
        assert (reading.health, reading.restarts, reading.running) == ("healthy", 2, True)
        assert reading.usage is not None and reading.usage.cpu_seconds == 1.0
        assert sampler.sample(30) is first and engine.api.calls == 1  # fresh: reused

        engine.api.answer.clear()
        clock.now += 10  # older than max_age: a new read starts, and hangs
        assert sampler.sample(0.2) is first  # the last sample, not a wait for Docker

        # The agent's tick reports the last sample's usage without waiting either (an
        # environment refused here: nothing to start on an engine without images).
        source = ScriptedSource([desired(env_body("hello", port=0))], threading.Event())
        agent = AgentState(Applier(EmptyEngine(), tmp_path), sampler=sampler)
        report = run_once(agent, source).report
        assert report is not None
        (hello,) = report.to_json()["environments"]
        assert hello["state"] == "refused"
        assert hello["usage"] == {"memory_bytes": 10 * MIB, "cpu_cores": None, "restarts": 2}

        engine.api.answer.set()
        clock.now += 10
        second = sampler.sample(30)
        assert second is not None and second is not first
        # Completed 20 s after the first, with one CPU second more: a twentieth of a core.
        assert second.readings[0].cpu_cores == 0.05

        registry = CollectorRegistry(auto_describe=False)
        registry.register(ContainerCollector(sampler, pruned=lambda: (3, 1)))
        text = generate_latest(registry).decode()
        samples = {
            (s.name, s.labels.get("health")): s
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        memory = samples[("portside_container_memory_working_set_bytes", None)]
        assert memory.value == 10 * MIB
        assert memory.labels == {
            "environment": "hello",
            "service": "hello",
            "kind": "production",
            "host": "web-1",
            "container": "hello-1",
        }
        assert samples[("portside_container_health_status", "healthy")].value == 1
        assert samples[("portside_container_restarts_total", None)].value == 2
        assert samples[("portside_container_cpu_seconds_total", None)].value == 2.0
        assert samples[("portside_agent_images_pruned_total", None)].value == 3
        assert samples[("portside_agent_image_prune_failures_total", None)].value == 1
    finally:
        engine.api.answer.set()
        sampler.close()


def test_the_deploy_scrape_config_is_valid(tmp_path: Path):
    """deploy/prometheus.yml passes ``promtool check config`` (with its token file made)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is missing (Debian's prometheus): scripts/test-env.sh up")
    token = tmp_path / "token"
    token.write_text("a-metrics-token-of-20\n")
    config = tmp_path / "prometheus.yml"
    text = DEPLOY_CONFIG.read_text()
    assert TOKEN_PATH in text
    config.write_text(text.replace(TOKEN_PATH, str(token)))
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "portside-agent" in text and "/metrics" in text


@dataclass
class BrokenApi:
    """An engine that fails every listing at once."""

    calls: int = 0

    def containers(self, all: bool, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls += 1
        raise RuntimeError("engine broken")


@dataclass
class BrokenEngine:
    api: BrokenApi = field(default_factory=BrokenApi)


def test_a_failing_engine_leaves_no_sample_and_is_asked_again():
    engine = BrokenEngine()
    sampler = Sampler(engine)
    sampler.track(desired())
    try:
        assert sampler.sample(30) is None
        assert sampler.sample(30) is None
        assert engine.api.calls == 2  # each failed read ended, so the next one started
    finally:
        sampler.close()
