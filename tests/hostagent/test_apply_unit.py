"""Pieces of apply that need no engine: compose detection, override file, env hygiene."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hostagent import labels as lbl
from hostagent.apply import (
    Applier,
    compose_environment,
    detect_compose_command,
    restart_policy,
)
from hostagent.errors import PermanentAgentError
from hostagent.plan import ComposeUp
from tests.hostagent.factories import desired, env_body

COMPOSE = """
version: "3.8"
services:
  web:
    image: 127.0.0.1:5001/a/web@sha256:{d}
  db:
    image: 127.0.0.1:5001/a/db@sha256:{d}
    restart: always
""".format(d="1" * 64)


def fake_runner(working: set[tuple[str, ...]]):
    calls: list[list[str]] = []

    def run(command: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        if command[0] == "missing":
            raise FileNotFoundError(command[0])
        code = 0 if tuple(command[:-1]) in working else 1
        return subprocess.CompletedProcess(command, code, "", "")

    return run, calls


def test_prefers_compose_v2():
    run, calls = fake_runner({("docker", "compose"), ("docker-compose",)})
    assert detect_compose_command(None, run) == ("docker", "compose")
    assert calls == [["docker", "compose", "version"]]


def test_falls_back_to_compose_v1():
    run, calls = fake_runner({("docker-compose",)})
    assert detect_compose_command(None, run) == ("docker-compose",)
    assert calls[-1] == ["docker-compose", "version"]


def test_override_wins_and_nothing_is_run():
    run, calls = fake_runner(set())
    assert detect_compose_command(["docker-compose"], run) == ("docker-compose",)
    assert calls == []


def test_no_compose_at_all_is_permanent():
    run, _calls = fake_runner(set())
    with pytest.raises(PermanentAgentError, match="docker compose"):
        detect_compose_command(None, run)


def test_compose_environment_keeps_no_agent_secret():
    env = compose_environment(
        {
            "PATH": "/usr/bin",
            "HOME": "/root",
            "DOCKER_HOST": "unix:///x.sock",
            "PORTSIDE_TOKEN": "secret",
            "AWS_SECRET_ACCESS_KEY": "x",
        }
    )
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "DOCKER_HOST": "unix:///x.sock"}


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("unless-stopped", {"Name": "unless-stopped"}),
        ("on-failure:3", {"Name": "on-failure", "MaximumRetryCount": 3}),
        ("no", {"Name": "no"}),
    ],
)
def test_restart_policy(text, policy):
    assert restart_policy(text) == policy


def test_compose_override_file(tmp_path: Path):
    state = desired(
        env_body(
            mode="compose",
            image=None,
            compose=COMPOSE,
            routed_service="web",
            port=8080,
            env={"PRICE": "$5"},
        )
    )
    env = state.environments[0]
    action = ComposeUp(env.name, env, "h" * 64, state.routing, state.host)
    applier = Applier(object(), tmp_path, publish_host="127.0.0.1")
    override = applier.override_file(action, applier.checked_compose(env))
    assert override["version"] == "3.8"
    web, db = override["services"]["web"], override["services"]["db"]
    for service in (web, db):
        assert service["labels"][lbl.ENVIRONMENT] == "hello"
        assert service["labels"][lbl.CONFIG_HASH] == "h" * 64
        assert service["labels"][lbl.ROLE] == lbl.ROLE_COMPOSE
        assert service["environment"] == {"PRICE": "$$5"}  # compose would interpolate "$"
    assert web["ports"] == ["127.0.0.1::8080"]
    assert "ports" not in db
    assert web["restart"] == "unless-stopped" and "restart" not in db
    assert web["labels"]["traefik.http.routers.hello.rule"] == "Host(`hello.example.com`)"
    assert not any(key.startswith("traefik.") for key in db["labels"])
    yaml.safe_dump(override)  # serialisable as written to disk


def test_other_compose_services_get_routes_of_their_own(tmp_path: Path):
    state = desired(
        env_body(
            mode="compose",
            image=None,
            compose=COMPOSE,
            routed_service="web",
            port=8080,
            routes=[{"service": "db", "port": 5432, "domains": ["db.hello.example.com"]}],
        )
    )
    env = state.environments[0]
    action = ComposeUp(env.name, env, "h" * 64, state.routing, state.host)
    applier = Applier(object(), tmp_path)
    override = applier.override_file(action, applier.checked_compose(env))
    db = override["services"]["db"]["labels"]
    assert db["traefik.http.routers.hello-db.rule"] == "Host(`db.hello.example.com`)"
    assert db["traefik.http.services.hello-db.loadbalancer.server.port"] == "5432"
    web = override["services"]["web"]["labels"]
    assert web["traefik.http.routers.hello.rule"] == "Host(`hello.example.com`)"
