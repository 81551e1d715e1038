"""End to end: ``portside agent`` started with PORTSIDE_AGENT_METRICS_ADDR serves what a
pushed commit's container uses, the control plane stores the environment's usage from the
agent's reports, and the agent notes the image for pruning."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import select

from controlplane.models import Host
from hostagent.prune import HISTORY_FILE
from tests.fixtures.stack import Stack, wait_for
from tests.hostagent.test_agent_e2e import serving
from tests.support.live import free_port
from tests.tasks.test_pipeline_e2e import finished, install, push

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def memory_of(port: int, environment: str) -> Sample | None:
    """The agent's memory sample of ``environment``'s container, once it has one."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return None  # not listening yet
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "portside_container_memory_working_set_bytes"
                and sample.labels["environment"] == environment
                and sample.value > 0
            ):
                return sample
    return None


def reported_usage(stack: Stack, host: str, environment: str) -> dict[str, Any] | None:
    """The usage of ``environment`` in the last report the control plane stored."""
    with stack.database.session_scope() as session:
        row = session.scalar(select(Host).where(Host.name == host))
        report = (row.observed if row is not None else None) or {}
    for item in report.get("environments") or []:
        usage = item.get("usage") or {}
        if item.get("name") == environment and usage.get("memory_bytes"):
            return dict(usage)
    return None


def test_the_agent_serves_metrics_and_reports_usage(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    install(stack, base_image)
    stack.start_buildworker("build-metrics")
    port = free_port()
    agent = stack.start_agent("web-1", {"PORTSIDE_AGENT_METRICS_ADDR": f"127.0.0.1:{port}"})
    sha = push(stack, {"index.html": "measured\n"}, 1_700_002_000)
    assert wait_for(lambda: finished(stack, sha), 300, 0.5).status == "succeeded"
    wait_for(lambda: serving(stack, "measured"), 120, 0.5, "the commit to serve")

    sample = wait_for(lambda: memory_of(port, "hello"), 60, 0.5, "the agent's metrics of hello")
    assert (sample.labels["service"], sample.labels["kind"]) == ("hello", "production")
    assert sample.labels["host"] == "web-1"

    usage = wait_for(
        lambda: reported_usage(stack, "web-1", "hello"), 60, 0.5, "a report with hello's usage"
    )
    assert usage["memory_bytes"] > 0 and usage["restarts"] == 0

    # The agent noted the image its environment runs, for pruning later.
    history = json.loads((stack.settings.data_dir / "agent-web-1" / HISTORY_FILE).read_text())
    assert list(history["environments"]) == ["hello"]
    log = agent.log()
    assert f"metrics on 127.0.0.1 port {port}" in log
    assert "image pruning failed" not in log and "Traceback" not in log
