"""``make demo`` (issue 17): without ``make dev`` it says so in one line; its sample app
builds on the engine with nothing to pull and serves its page on 8080. The whole demo
against a running ``make dev`` is run by hand (it needs the dev instance)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import pytest
import requests

from controlplane import demo


def test_without_make_dev_it_says_what_to_do(tmp_path: Path) -> None:
    env = {**os.environ, "PORTSIDE_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "controlplane.demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "no `make dev` runs on" in result.stderr and "make demo" in result.stderr
    assert not (tmp_path / "data" / "demo").exists()  # nothing made before dev answers


def test_the_sample_is_one_commit_made_once(tmp_path: Path) -> None:
    repository = demo.make_repository(tmp_path / "hello", None)
    log = subprocess.run(
        ["git", "-C", str(repository), "log", "--format=%H"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(log) == 1
    assert (repository / "Dockerfile").read_text().startswith("FROM scratch\n")
    assert demo.make_repository(tmp_path / "hello", None) == repository  # kept as it is
    based = demo.make_repository(tmp_path / "based", "portside-test/base:latest")
    assert (based / "Dockerfile").read_text().startswith("FROM portside-test/base:latest\n")
    assert not (based / "busybox").exists()


@pytest.mark.docker
def test_the_sample_builds_from_nothing_and_serves_its_page(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    repository = demo.make_repository(tmp_path / "hello", None)
    tag = f"portside-demo-test:{uuid.uuid4().hex[:12]}"
    image, _logs = docker_client.images.build(path=str(repository), tag=tag, rm=True, pull=False)
    container = None
    try:
        container = docker_client.containers.run(
            tag, detach=True, ports={"8080/tcp": ("127.0.0.1", None)}
        )
        container.reload()
        port = container.ports["8080/tcp"][0]["HostPort"]
        for _ in range(50):
            try:
                page = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert page.status_code == 200 and "Hello from Portside" in page.text
    finally:
        if container is not None:
            container.remove(force=True)
        docker_client.images.remove(image.id, force=True)
