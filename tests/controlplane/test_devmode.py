"""``portside dev``: one instance per data directory and Redis database, a taken address
refused in one line, and the next command of the same checkout finding the running one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from controlplane.devmode import REDIS_OWNER_KEY, connection
from tests.controlplane.test_cli import (
    PORTSIDE,
    assert_one_line_failure,
    clean_environ,
    run_portside,
)
from tests.fixtures.processes import wait_until
from tests.support.live import free_port


@pytest.fixture
def dev_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """A dev instance of this test's own: SQLite, data directory, Redis database, port, and
    no Docker engine (so no build worker or agent starts)."""
    return {
        "PORTSIDE_DATA_DIR": str(tmp_path / "data"),
        "PORTSIDE_DATABASE_URL": f"sqlite:///{tmp_path / 'portside.sqlite3'}",
        "PORTSIDE_REDIS_URL": redis_url,
        "PORTSIDE_DEV_BIND": f"127.0.0.1:{free_port()}",
        "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}",
    }


class DevProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self.process = subprocess.Popen(
            [str(PORTSIDE), "dev"],
            env={**clean_environ(), **env},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


@pytest.fixture
def running_dev(dev_env: dict[str, str], tmp_path: Path) -> Iterator[DevProcess]:
    dev = DevProcess(dev_env, tmp_path / "dev.log")
    url = f"http://{dev_env['PORTSIDE_DEV_BIND']}/healthz"
    try:
        wait_until(
            lambda: _answers(url) or dev.process.poll() is not None,
            "portside dev answers",
            timeout=120,
            diagnostics=lambda: dev.output,
        )
        assert dev.process.poll() is None, dev.output
        yield dev
    finally:
        dev.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_a_taken_address_is_refused_in_one_line_naming_portside_dev_bind(
    dev_env: dict[str, str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bind = f"127.0.0.1:{taken.getsockname()[1]}"

        result = run_portside(["dev"], {**dev_env, "PORTSIDE_DEV_BIND": bind})

    assert_one_line_failure(result, 1, bind, "PORTSIDE_DEV_BIND")


def test_a_redis_database_another_instance_uses_is_refused(
    dev_env: dict[str, str], redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(REDIS_OWNER_KEY, "elsewhere:/srv/other-checkout/.portside", ex=60)

    result = run_portside(["dev"], dev_env)

    assert_one_line_failure(result, 1, "/srv/other-checkout", "PORTSIDE_REDIS_URL")
    assert client.get(REDIS_OWNER_KEY) == b"elsewhere:/srv/other-checkout/.portside"
    client.close()


def test_dev_greets_with_a_token_the_next_command_uses_and_refuses_a_second_instance(
    running_dev: DevProcess, dev_env: dict[str, str]
) -> None:
    data_dir = Path(dev_env["PORTSIDE_DATA_DIR"])
    wait_until(lambda: "admin token" in running_dev.output, "the greeting", timeout=30)
    printed = running_dev.output.split("admin token ", 1)[1].split()[0]
    found = connection(data_dir)
    assert found is not None
    assert found.token == printed
    assert found.url == f"http://{dev_env['PORTSIDE_DEV_BIND']}"
    assert (data_dir / "dev.json").stat().st_mode & 0o777 == 0o600

    # The next command, with no PORTSIDE_URL or PORTSIDE_TOKEN, talks to it over HTTP.
    shared = {k: v for k, v in dev_env.items() if k != "PORTSIDE_DEV_BIND"}
    listed = run_portside(["services", "list", "--json"], shared)
    assert listed.code == 0, listed
    assert json.loads(listed.stdout) == []

    second = run_portside(["dev"], {**dev_env, "PORTSIDE_DEV_BIND": f"127.0.0.1:{free_port()}"})
    assert_one_line_failure(second, 1, "another `portside dev`", "PORTSIDE_DATA_DIR")

    assert running_dev.stop() == 0
    assert connection(data_dir) is None
    assert not (data_dir / "dev.json").exists()


def test_a_restarted_dev_keeps_its_admin_token(dev_env: dict[str, str], tmp_path: Path) -> None:
    tokens = [_greeted_token(dev_env, tmp_path / f"dev-{attempt}.log") for attempt in range(2)]

    assert tokens[0] == tokens[1]


def _greeted_token(dev_env: dict[str, str], log: Path) -> str:
    """Start ``portside dev``, read the admin token it prints, stop it."""
    dev = DevProcess(dev_env, log)
    try:
        wait_until(
            lambda: "admin token" in dev.output or dev.process.poll() is not None,
            "the greeting",
            timeout=120,
            diagnostics=lambda: dev.output,
        )
        return dev.output.split("admin token ", 1)[1].split()[0]
    finally:
        assert dev.stop() == 0, dev.output
