"""Flower shows a finished pipeline as a list of deploy steps, with ids for arguments."""

from __future__ import annotations

import ast
from typing import Any

import pytest
import requests

from tests.fixtures.processes import worker_environment
from tests.fixtures.stack import Stack, wait_for
from tests.support.live import free_port
from tests.tasks.test_pipeline_e2e import finished, install, push

pytestmark = [pytest.mark.docker, pytest.mark.slow]

STEPS = ("clone", "build", "push", "upload_compose", "record_deployment")


def api(port: int, path: str) -> Any:
    try:
        response = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except requests.RequestException:
        return None
    return response.json() if response.status_code == 200 else None


def test_flower_finds_the_tasks_of_a_finished_pipeline(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    port = free_port()
    env = worker_environment(stack.settings) | {"FLOWER_UNAUTHENTICATED_API": "true"}
    stack.workers.start("flower", ["flower", "--port", str(port)], None, env)
    wait_for(lambda: api(port, "/api/workers") is not None, 60, 0.5, "Flower to answer")
    install(stack, base_image)
    stack.start_buildworker("build-flower")
    sha = push(stack, {"index.html": "seen by flower\n"}, 1_700_003_000)
    build = wait_for(lambda: finished(stack, sha), 300, 0.5, "the build")
    assert build.status == "succeeded"

    def pipeline_tasks() -> dict[str, Any] | None:
        tasks = api(port, "/api/tasks") or {}
        by_name = {task["name"]: task for task in tasks.values() if task.get("state") == "SUCCESS"}
        wanted = {f"portside.{step}" for step in STEPS} | {"portside.process_delivery"}
        return by_name if wanted <= set(by_name) else None

    tasks = wait_for(pipeline_tasks, 60, 0.5, "Flower to list the pipeline's tasks")
    for step in STEPS:
        # Arguments are ids (build, attempt): never a payload, a token or a secret.
        assert list(ast.literal_eval(tasks[f"portside.{step}"]["args"])) == [
            build.id,
            build.attempt,
        ]
    tokens = [t.token for t in stack.github.state.tokens]
    assert not any(token in str(task) for token in tokens for task in tasks.values())
    image = build.images["app"]
    registry.delete_image(image["repository"].split("/", 1)[1], image["tag"])
