"""End to end: an app printing a marker every second, deployed by a real agent, is seen
through ``portside logs --env hello -f``; with the control plane stopped the app runs on,
and once it is back the follower sees new markers again."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from typing import Any

import docker
import pytest

from tests.controlplane.test_cli import PORTSIDE, clean_environ
from tests.fixtures.stack import Stack, wait_for
from tests.hostagent.test_agent_e2e import containers_of, deployment_status
from tests.tasks.test_pipeline_e2e import finished, install, push

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MARKER = re.compile(r"marker-(\d+)$")


class Follower:
    """``portside logs --env hello -f`` with its output lines collected on a thread."""

    def __init__(self, stack: Stack) -> None:
        token = stack.admin_headers["Authorization"].removeprefix("Bearer ")
        env = {**clean_environ(), "PORTSIDE_URL": stack.url, "PORTSIDE_TOKEN": token}
        self.process = subprocess.Popen(
            [str(PORTSIDE), "logs", "--env", "hello", "-f"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def markers(self) -> list[int]:
        return [int(m.group(1)) for line in self.lines if (m := MARKER.search(line))]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def test_portside_logs_follows_an_app_through_a_control_plane_outage(
    stack: Stack,
    base_image: str,
    docker_client: docker.DockerClient,
    registry: Any,
    docker_cleanup: None,
) -> None:
    install(stack, base_image)
    stack.start_buildworker("build-logs")
    stack.start_agent("web-1")
    dockerfile = (
        f"FROM {base_image}\nCOPY index.html /www/index.html\n"
        'CMD ["sh", "-c", "httpd -p 8080 -h /www; i=0; '
        'while true; do echo marker-$i; i=$((i+1)); sleep 1; done"]\n'
    )
    sha = push(stack, {"Dockerfile": dockerfile, "index.html": "chatty\n"}, 1_700_003_000)
    assert wait_for(lambda: finished(stack, sha), 300, 0.5).status == "succeeded"
    wait_for(lambda: deployment_status(stack, sha) == "active", 120, 0.5, "activation")

    follower = Follower(stack)
    try:
        wait_for(lambda: len(follower.markers()) >= 3, 60, 0.2, "markers through the CLI")
        seen = follower.markers()
        assert seen == list(range(seen[0], seen[0] + len(seen)))  # in order, none twice
        lines = [line for line in follower.lines if MARKER.search(line)]
        assert lines[0].startswith("hello")  # labelled with its container

        stack.stop_control_plane()
        time.sleep(10)  # the agent's shipper fails and buffers meanwhile
        (running,) = [c for c in containers_of(docker_client) if c.status == "running"]
        stopped_at = max(follower.markers())
        stack.start_control_plane()
        wait_for(
            lambda: max(follower.markers()) > stopped_at + 5, 90, 0.5, "markers after the outage"
        )
        running.reload()
        assert running.status == "running"
        # What the app printed meanwhile waited in the agent's buffer: nothing is missing.
        after = follower.markers()
        assert after == list(range(after[0], after[0] + len(after)))
    finally:
        follower.close()
