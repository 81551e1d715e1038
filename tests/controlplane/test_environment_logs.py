"""Runtime logs on the control plane (real PostgreSQL and Redis): agents post batches for
their own environments only, secrets are masked, the window is capped oldest first, and
``GET /v1/environments/<id>/logs`` serves it (since, tail, service) and follows it over
real HTTP, as ``portside logs --env NAME -f`` does."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import select

from controlplane.db import Database
from controlplane.models import Environment
from controlplane.services import envlogs, hosts
from tests.controlplane.test_agent_api import auth, deploy, host_token
from tests.controlplane.test_cli import PORTSIDE, clean_environ
from tests.controlplane.test_cli_client import api_env, live

__all__ = ["api_env", "host_token", "live"]  # fixtures, used by name


@pytest.fixture
def hello(database: Database, host_token: str) -> int:
    """The production environment of ``hello`` (on web-1), deployed once."""
    deploy(database, "a" * 40)
    with database.session_scope() as session:
        env = session.scalar(select(Environment).where(Environment.name == "hello"))
        assert env is not None
        return env.id


def entry(
    line: str, *, environment: str = "hello", service: str = "", stream: str = "stdout"
) -> dict[str, str]:
    return {
        "environment": environment,
        "service": service,
        "kind": "production",
        "container": "hello-1",
        "stream": stream,
        "time": "2026-01-01T00:00:00.000000000Z",
        "line": line,
    }


def ship(client: FlaskClient, token: str, *entries: dict[str, Any], dropped: int = 0) -> None:
    response = client.post(
        "/v1/agent/logs", json={"entries": list(entries), "dropped": dropped}, headers=auth(token)
    )
    assert response.status_code == 204, response.json


def lines(client: FlaskClient, env_id: int, headers: dict[str, str], **query: Any) -> list[str]:
    response = client.get(f"/v1/environments/{env_id}/logs", query_string=query, headers=headers)
    assert response.status_code == 200, response.json
    return [line["line"] for line in response.json["lines"]]


def test_batches_are_stored_masked_and_served(
    client: FlaskClient, host_token: str, hello: int, read_headers: dict[str, str]
) -> None:
    ship(
        client,
        host_token,
        entry("starting with key s3cret-value"),
        entry("web ready", service="web"),
        entry("boom", service="worker", stream="stderr"),
        entry("not mine", environment="elsewhere"),
    )
    assert lines(client, hello, read_headers) == [
        "starting with key ***",
        "web ready",
        "boom",
    ]
    assert lines(client, hello, read_headers, service="worker") == ["boom"]
    assert lines(client, hello, read_headers, tail=2) == ["web ready", "boom"]
    assert lines(client, hello, read_headers, since="2999-01-01T00:00:00Z") == []
    ship(client, host_token, entry("after a gap"), dropped=7)
    served = client.get(f"/v1/environments/{hello}/logs", headers=read_headers).json["lines"]
    assert [line["stream"] for line in served[-2:]] == ["agent", "stdout"]
    assert "dropped 7" in served[-2]["line"]
    assert served[0]["container"] == "hello-1" and served[0]["kind"] == "production"


def test_only_the_hosts_own_environments_and_readers(
    client: FlaskClient, database: Database, hello: int, read_headers: dict[str, str]
) -> None:
    with database.session_scope() as session:
        other = hosts.agent_token(session, "web-2")
    ship(client, other, entry("from the wrong host"))
    assert lines(client, hello, read_headers) == []
    assert client.get(f"/v1/environments/{hello}/logs").status_code == 401
    assert client.get("/v1/environments/999999/logs", headers=read_headers).status_code == 404
    bad = client.post("/v1/agent/logs", json={"entries": "x"}, headers=auth(other))
    assert bad.status_code == 400
    too_many = [entry("x")] * (envlogs.MAX_BATCH + 1)
    big = client.post("/v1/agent/logs", json={"entries": too_many}, headers=auth(other))
    assert big.status_code == 400


def test_the_window_drops_the_oldest(
    client: FlaskClient,
    host_token: str,
    hello: int,
    read_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(envlogs, "MAX_ENTRIES", 5)
    ship(client, host_token, *[entry(f"line {i}") for i in range(12)])
    assert lines(client, hello, read_headers) == [f"line {i}" for i in range(7, 12)]


def test_portside_logs_env_follows_new_lines(
    client: FlaskClient,
    host_token: str,
    hello: int,
    api_env: dict[str, str],
    read_headers: dict[str, str],
    redis_url: str,
) -> None:
    ship(client, host_token, entry("before following"))
    env = {**clean_environ(), **api_env, "PORTSIDE_TOKEN": read_headers["Authorization"][7:]}
    process = subprocess.Popen(
        [str(PORTSIDE), "logs", "--env", "hello", "-f"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "hello-1 | before following\n"
        # Lines shipped while the follower waits arrive, in order, each once.
        for i in range(3):
            time.sleep(0.3)
            ship(client, host_token, entry(f"live {i}", service="web"))
        got = [process.stdout.readline() for _ in range(3)]
        assert got == [f"web | live {i}\n" for i in range(3)]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert Redis.from_url(redis_url).xlen(envlogs.stream_key(hello)) == 4
