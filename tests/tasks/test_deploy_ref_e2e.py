"""End to end (issue 19): ``portside deploy hello --ref v1.2.0`` runs that tag's commit,
older than the one running, through real workers, the registry and the agent; a later
push replaces it; tracking ``v*``, the newest tag pushed runs and one pushed earlier but
delivered late does not replace it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from sqlalchemy import select

from controlplane.models import Build
from tests.controlplane.test_cli import run_portside
from tests.controlplane.test_deploy_ref import tag_push
from tests.fixtures.stack import Stack, wait_for
from tests.githubserver import repos
from tests.hostagent.test_agent_e2e import deployment_status, serving
from tests.tasks.test_pipeline_e2e import (
    REPOSITORY,
    delivery_status,
    install,
    post_delivery,
    push,
    push_payload,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def finished(stack: Stack, build_id: int) -> Build | None:
    with stack.database.session_scope() as session:
        build = session.get(Build, build_id)
        return build if build and build.status in ("succeeded", "failed", "cancelled") else None


def newest_build_of(stack: Stack, sha: str) -> Build | None:
    with stack.database.session_scope() as session:
        return session.scalars(
            select(Build).where(Build.commit_sha == sha).order_by(Build.id.desc())
        ).first()


def runs(stack: Stack, sha: str, text: str) -> None:
    """Wait until ``sha``'s build succeeded, its deployment is active and serves ``text``."""
    build = wait_for(lambda: newest_build_of(stack, sha), 60, what=f"a build of {sha[:7]}")
    done = wait_for(lambda: finished(stack, build.id), 300, 0.5, f"build {build.id}")
    assert done.status == "succeeded", done.error
    wait_for(lambda: deployment_status(stack, sha) == "active", 120, 0.5, f"{text!r} active")
    wait_for(lambda: serving(stack, text), 60, 0.5, f"{text!r} served")


def tag(stack: Stack, name: str, files: dict[str, str]) -> str:
    """Commit ``files`` to master on the test GitHub and tag that commit ``name``."""
    sha = stack.github.state.commit(REPOSITORY, files, branch="master")
    repos.git(stack.github.state.repository(REPOSITORY).path, "tag", name, sha)
    return sha


def push_tag(stack: Stack, name: str, sha: str, pushed_at: int) -> int:
    return post_delivery(stack, "push", tag_push(push_payload(stack, sha, pushed_at), name))


def test_deploy_a_tag_then_track_tags(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    install(stack, base_image)
    stack.start_buildworker("build-ref")
    stack.start_agent("web-1")
    released = tag(stack, "v1.2.0", {"index.html": "release 1.2.0\n"})
    head = push(stack, {"index.html": "main work\n"}, 1_700_004_000)
    runs(stack, head, "main work")
    cli_env = {
        "PORTSIDE_URL": stack.url,
        "PORTSIDE_TOKEN": stack.admin_headers["Authorization"].split(" ", 1)[1],
        "PORTSIDE_DATA_DIR": str(stack.settings.data_dir / "cli"),
    }

    deployed = run_portside(["deploy", "hello", "--ref", "v1.2.0", "--json"], cli_env)

    assert deployed.code == 0, deployed
    build = json.loads(deployed.stdout)
    assert (build["commit_sha"], build["ref"]) == (released, "v1.2.0")
    runs(stack, released, "release 1.2.0")  # older than what ran, and yet it runs
    assert deployment_status(stack, head) == "superseded"

    # A push after the deploy replaces it as usual.
    later = push(stack, {"index.html": "after the release\n"}, int(time.time()) + 2)
    runs(stack, later, "after the release")

    # Tracking v*: the newest tag pushed runs, whatever its commit.
    service_id = requests.get(
        f"{stack.url}/v1/services", headers=stack.admin_headers, timeout=10
    ).json()[0]["id"]
    patched = requests.patch(
        f"{stack.url}/v1/services/{service_id}",
        json={"track_tags": "v*"},
        headers=stack.admin_headers,
        timeout=10,
    )
    assert patched.status_code == 200 and patched.json()["track_tags"] == "v*"
    now = int(time.time())
    tagged = tag(stack, "v1.3.0", {"index.html": "release 1.3.0\n"})
    push_tag(stack, "v1.3.0", tagged, now + 20)
    runs(stack, tagged, "release 1.3.0")
    # Pushed before v1.3.0 but delivered after it: not built, v1.3.0 keeps running.
    late = push_tag(stack, "v1.2.9", released, now + 10)
    wait_for(lambda: delivery_status(stack, late) == "ignored", 60, what="the late tag")
    assert serving(stack, "release 1.3.0")
    with stack.database.session_scope() as session:
        refs = [b.ref for b in session.scalars(select(Build).order_by(Build.id))]
    assert refs == [None, "v1.2.0", None, "v1.3.0"]
    for done in (head, released, later, tagged):
        image = newest_build_of(stack, done).images["app"]  # type: ignore[union-attr]
        registry.delete_image(image["repository"].split("/", 1)[1], image["tag"])
