"""The agent's wire contract: a snapshot and a report read back what they write, and a
body that breaks the contract is refused with the field named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts.agentwire import (
    AgentReport,
    ContainerReport,
    DesiredState,
    EnvironmentReport,
    EnvironmentUsage,
    ReportState,
    WireError,
)

IMAGE = "127.0.0.1:5001/team/hello@sha256:" + "ab" * 32
COMPOSE = "services:\n  web:\n    image: " + IMAGE + "\n  worker:\n    image: " + IMAGE + "\n"


def environment(name: str = "hello", **overrides: Any) -> dict[str, Any]:
    """An entry as the control plane renders it (``services.snapshots._environment_state``)."""
    body: dict[str, Any] = {
        "name": name,
        "kind": "production",
        "service": "hello",
        "deployment_id": 7,
        "build_id": 3,
        "commit_sha": "0123456789abcdef0123456789abcdef01234567",
        "mode": "container",
        "image": IMAGE,
        "compose": None,
        "compose_allow": [],
        "port": 8080,
        "routed_service": None,
        "routes": [],
        "domains": [f"{name}.example.com"],
        "env": {"KEY": "va$lue"},
        "health_check": {"path": "/healthz", "timeout": 60},
        "resources": {"cpus": 0.5, "memory": "256m", "restart": "unless-stopped"},
        "registry": {"address": "127.0.0.1:5001", "username": "u", "password": "p"},
    }
    body.update(overrides)
    return body


def snapshot(*environments: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "host": "web-1",
        "generation": 42,
        "complete": True,
        "routing": {"entrypoint": "websecure", "cert_resolver": "letsencrypt"},
        "environments": list(environments),
        "withheld": [],
    }
    body.update(overrides)
    return body


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def test_a_rendered_snapshot_reads_back_byte_for_byte():
    body = snapshot(
        environment(),
        environment(
            "shop",
            kind="preview",
            mode="compose",
            image=None,
            compose=COMPOSE,
            compose_allow=["cap_add"],
            routed_service="web",
            routes=[{"service": "worker", "port": 9000, "domains": ["worker.shop.example.com"]}],
            health_check=None,
            protection={"ip_allow": ["10.0.0.0/8"]},
            log_driver={"driver": "syslog", "options": {"syslog-address": "udp://10.0.0.1:514"}},
        ),
        environment("scaled", replicas=3),
        withheld=[{"name": "held", "reason": "cannot be rendered"}],
    )
    state = DesiredState.from_json(body)
    assert [env.name for env in state.environments] == ["hello", "shop", "scaled"]
    assert canonical(state.to_json()) == canonical(body)
    assert DesiredState.from_json(state.to_json()) == state


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body must be an object"),
        (snapshot(generation="42"), "generation must be an integer"),
        (snapshot(environments={}), "environments must be a list"),
        (snapshot(routing={"entrypoint": "web secure"}), "routing.entrypoint"),
        (snapshot(withheld="x"), "withheld must be a list"),
    ],
)
def test_a_snapshot_frame_that_breaks_the_contract_names_the_field(body, field):
    with pytest.raises(WireError, match=field):
        DesiredState.from_json(body)


def test_a_bad_environment_is_refused_alone_with_the_field_named():
    state = DesiredState.from_json(snapshot(environment(), environment("bad", port=70000)))
    assert [env.name for env in state.environments] == ["hello"]
    (refused,) = state.refused
    assert refused.name == "bad" and refused.deployment_id == 7
    assert refused.reason == "desired state: environment 'bad': port must be at most 65535"


def report() -> AgentReport:
    container = ContainerReport("c1", "hello-1", IMAGE, "running", "healthy", 2)
    return AgentReport(
        42,
        "0.1.0",
        (
            EnvironmentReport(
                "hello",
                7,
                ReportState.RUNNING,
                healthy=True,
                address="127.0.0.1:32768",
                containers=(container,),
                usage=EnvironmentUsage(1024, 0.25, 2),
            ),
            EnvironmentReport("gone", 5, ReportState.REMOVED),
        ),
    )


def test_a_report_reads_back_what_it_writes():
    body = report().to_json()
    assert body["environments"][0]["state"] == "running"  # a plain string on the wire
    assert json.loads(json.dumps(body)) == body
    assert AgentReport.from_json(body) == report()
    assert "usage" not in body["environments"][1]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda body: body.pop("generation"), "generation"),
        (lambda body: body.update(environments={}), "environments must be a list"),
        (lambda body: body["environments"][0].update(state="exploded"), r"environments\[0\].state"),
        (lambda body: body["environments"][0].update(healthy="yes"), r"environments\[0\].healthy"),
        (
            lambda body: body["environments"][0]["containers"][0].update(restart_count=True),
            r"environments\[0\].containers\[0\].restart_count",
        ),
        (
            lambda body: body["environments"][0]["usage"].update(memory_bytes="1k"),
            r"environments\[0\].usage.memory_bytes",
        ),
    ],
)
def test_a_report_that_breaks_the_contract_names_the_field(change, field):
    body = report().to_json()
    change(body)
    with pytest.raises(WireError, match=f"status report: {field}"):
        AgentReport.from_json(body)
