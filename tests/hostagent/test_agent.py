"""The loop's pacing helpers and its refusal to die, without Docker."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from contracts.agentwire import AgentReport, DesiredState
from hostagent.agent import AgentState, fetch_delay, run_forever, run_once, tick_delay
from hostagent.apply import Applier
from hostagent.client import Fetched
from hostagent.errors import PermanentAgentError, TransientAgentError
from hostagent.settings import AgentSettings
from tests.hostagent.factories import desired, env_body


class EmptyEngine:
    """Just enough of a DockerClient for observe(): no containers at all."""

    class api:  # noqa: N801 - mimics docker's attribute name
        @staticmethod
        def containers(all: bool, filters: dict[str, Any]) -> list[Any]:
            return []


@dataclass
class ScriptedSource:
    script: list[Any]
    stop: threading.Event
    calls: list[float] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    last_good: DesiredState | None = None

    def fetch(self, wait: float) -> Fetched:
        self.calls.append(wait)
        item = self.script.pop(0) if self.script else None
        if not self.script:
            self.stop.set()
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, DesiredState)
        self.last_good = item
        return Fetched(item, changed=True)

    def report(self, status: AgentReport) -> None:
        self.reports.append(status.to_json())


def test_tick_delay():
    assert tick_delay(10, 0, changed=True, rand=lambda: 1.0) == 0.5
    assert tick_delay(10, 3, changed=False, rand=lambda: 0.0) == 7
    assert tick_delay(10, 12, changed=False, rand=lambda: 1.0) == 1.0


def test_fetch_delay():
    assert fetch_delay(PermanentAgentError("401", retry_after=300), 1) == 300
    assert fetch_delay(TransientAgentError("429", retry_after=40), 1) == 40
    assert 0.5 <= fetch_delay(TransientAgentError("503"), 1) <= 1.0
    assert 4 <= fetch_delay(TransientAgentError("503"), 4) <= 8


def test_run_forever_survives_anything(tmp_path: Path):
    stop = threading.Event()
    state = desired()
    source = ScriptedSource(
        [RuntimeError("unexpected"), TransientAgentError("down"), state, state], stop
    )
    settings = AgentSettings(url="http://x", token="t", interval=0.01, state_dir=tmp_path)
    agent = AgentState(Applier(EmptyEngine(), tmp_path))
    thread = threading.Thread(target=run_forever, args=(settings, agent, source, stop))
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert len(source.calls) == 4
    assert source.calls[-1] == 0  # interval 0.01 s: a long poll of 0 s
    assert source.reports and source.reports[-1]["generation"] == 42


def test_run_once_reports_nothing_before_anything_is_known(tmp_path: Path):
    source = ScriptedSource(
        [TransientAgentError("down"), TransientAgentError("down")], threading.Event()
    )
    result = run_once(AgentState(Applier(EmptyEngine(), tmp_path)), source)
    assert result.report is None and result.desired is None
    assert source.reports == []


@pytest.mark.parametrize("complete", [True])
def test_report_shape(tmp_path: Path, complete: bool):
    stop = threading.Event()
    state = desired(complete=complete)
    source = ScriptedSource([state, state], stop)
    result = run_once(AgentState(Applier(EmptyEngine(), tmp_path)), source)
    assert result.report is not None
    sent = {"generation": 42, "agent_version": "0.1.0", "environments": []}
    assert result.report.to_json() == sent
    assert source.reports == [sent]


def test_refused_environments_are_reported_with_their_reason(tmp_path: Path):
    state = desired(env_body("broken", deployment_id=5, port=0))
    source = ScriptedSource([state], threading.Event())
    agent = AgentState(Applier(EmptyEngine(), tmp_path))
    report = run_once(agent, source).report
    assert report is not None
    (broken,) = report.to_json()["environments"]
    assert broken == {
        "name": "broken",
        "deployment_id": 5,
        "state": "refused",
        "healthy": False,
        "address": None,
        "error": "desired state: environment 'broken': port must be an integer >= 1",
        "logs": None,
        "containers": [],
    }


POLICY_BREAKER = """
services:
  web:
    image: 127.0.0.1:5001/a/web@sha256:{d}
    cap_add: [SYS_MODULE]
    volumes: ["/:/host"]
""".format(d="1" * 64)


def test_a_compose_file_the_policy_refuses_starts_nothing_and_is_reported(tmp_path: Path):
    calls: list[list[str]] = []

    def run(command: list[str], **_kwargs: Any) -> Any:
        calls.append(command)
        raise AssertionError("compose must not run for a refused file")

    body = env_body(
        "stack", mode="compose", image=None, compose=POLICY_BREAKER, routed_service="web"
    )
    state = desired(body, generation=1)
    source = ScriptedSource([state, state], threading.Event())
    agent = AgentState(Applier(EmptyEngine(), tmp_path, run=run))
    first = run_once(agent, source)
    assert first.outcomes["stack"].state == "refused"
    assert first.report is not None
    (status,) = first.report.to_json()["environments"]
    assert status["state"] == "refused" and status["healthy"] is False
    assert "services.web.cap_add" in status["error"]
    assert "services.web.volumes" in status["error"]
    assert calls == [] and not (tmp_path / "compose").exists()
    # Not tried again every tick, still reported refused.
    second = run_once(agent, source)
    assert second.outcomes == {} and second.report is not None
    assert second.report.environments[0].state == "refused"
    # An admin allowing the key for production does not allow binds.
    allowed = desired({**body, "compose_allow": ["cap_add"], "deployment_id": 8}, generation=2)
    third = run_once(agent, ScriptedSource([allowed], threading.Event()))
    assert third.report is not None
    error = third.report.environments[0].error
    assert error is not None
    assert "services.web.volumes" in error and "cap_add" not in error


def test_withheld_environments_are_not_reported(tmp_path: Path):
    from hostagent.snapshot import parse_desired_state
    from tests.hostagent.factories import state_body

    body = state_body(env_body("broken", deployment_id=5, port=0))
    body["withheld"] = [{"name": "held", "reason": "cannot be rendered"}]
    source = ScriptedSource([parse_desired_state(body)], threading.Event())
    report = run_once(AgentState(Applier(EmptyEngine(), tmp_path)), source).report
    assert report is not None
    assert [env.name for env in report.environments] == ["broken"]
