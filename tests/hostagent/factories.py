"""Builders for desired-state bodies and observed containers used across the tests."""

from __future__ import annotations

from typing import Any

from contracts.agentwire import DesiredState
from hostagent import labels as lbl
from hostagent.confighash import config_hash
from hostagent.observe import ObservedContainer, ObservedState, group
from hostagent.snapshot import parse_desired_state

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"127.0.0.1:5001/codertocat/hello@{DIGEST}"
SHA = "0123456789abcdef0123456789abcdef01234567"


def env_body(name: str = "hello", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "kind": "production",
        "service": "hello",
        "deployment_id": 7,
        "build_id": 3,
        "commit_sha": SHA,
        "mode": "container",
        "image": IMAGE,
        "compose": None,
        "port": 8080,
        "routed_service": None,
        "domains": [f"{name}.example.com"],
        "env": {"KEY": "value"},
        "health_check": {"path": "/", "timeout": 60},
        "resources": {"cpus": 0.5, "memory": "256m", "restart": "unless-stopped"},
        "registry": {"address": "127.0.0.1:5001", "username": None, "password": None},
    }
    body.update(overrides)
    return body


def state_body(
    *envs: dict[str, Any], generation: int = 42, complete: bool = True
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "host": "web-1",
        "generation": generation,
        "routing": {"entrypoint": "websecure", "cert_resolver": "letsencrypt"},
        "environments": list(envs),
    }
    if complete:
        body["complete"] = True
    return body


def desired(*envs: dict[str, Any], complete: bool = True, generation: int = 42) -> DesiredState:
    return parse_desired_state(state_body(*envs, complete=complete, generation=generation))


def hash_of(state: DesiredState, name: str, publish_host: str = "") -> str:
    env = state.environment(name)
    assert env is not None
    return config_hash(env, publish_host, state.routing)


def container(
    cid: str,
    env: str = "hello",
    *,
    config_hash: str | None = "old",
    status: str = "running",
    health: str | None = None,
    role: str = lbl.ROLE_APP,
    deployment_id: int = 6,
    kind: str = "production",
    compose_service: str | None = None,
    exit_code: int | None = 0,
    created: str = "",
) -> ObservedContainer:
    return ObservedContainer(
        id=cid,
        name=f"{env}-{cid}",
        environment=env,
        role=role,
        config_hash=config_hash,
        deployment_id=deployment_id,
        kind=kind,
        image=IMAGE,
        status=status,
        health=health,
        exit_code=exit_code,
        compose_service=compose_service,
        created=created or cid,
    )


def observed(*containers: ObservedContainer) -> ObservedState:
    return group(list(containers))
