"""One build worker, a backlog of two services: the builds start by turns between the
services, and the worker ends each build before it clones the next."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
from sqlalchemy import select

from controlplane.models import Build
from controlplane.services import catalog, servicerules
from tests.controlplane.test_previews_e2e import pull_request
from tests.fixtures.stack import Stack, wait_for
from tests.helpers import json_payload
from tests.tasks.test_pipeline_e2e import INSTALLATION, REPOSITORY, install, post_delivery

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ENDED = ("succeeded", "failed", "cancelled", "superseded")


def open_pull(stack: Stack, number: int) -> None:
    branch = f"feature-{number}"
    stack.github.state.commit(REPOSITORY, {"index.html": f"{branch}\n"}, branch=branch)
    stack.github.state.add_pull_request(REPOSITORY, number, branch, base_ref="master")
    payload = pull_request(stack, "opened", branch)
    payload["number"] = payload["pull_request"]["number"] = number
    post_delivery(stack, "pull_request", payload)


def push_develop(stack: Stack) -> None:
    sha = stack.github.state.commit(REPOSITORY, {"index.html": "develop\n"}, branch="develop")
    payload = copy.deepcopy(json_payload("push__with-new-branch.payload.json"))
    repo = stack.github.repository_json(REPOSITORY)
    payload["installation"]["id"] = INSTALLATION
    payload["repository"].update({k: repo[k] for k in ("id", "clone_url", "full_name", "name")})
    payload.update(ref="refs/heads/develop", after=sha, deleted=False)
    payload["head_commit"]["id"] = sha
    post_delivery(stack, "push", payload)


def all_builds(stack: Stack) -> list[Any]:
    with stack.database.session_scope() as session:
        rows = list(session.scalars(select(Build)))
        for row in rows:
            _ = row.steps, row.service
        session.expunge_all()
    return rows


def test_a_backlog_is_served_by_turns_and_one_build_at_a_time(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    install(stack, base_image)  # service "hello" tracks master
    with stack.database.session_scope() as session:
        catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="other", repository=REPOSITORY, branch="develop", host="web-1", port=8080
            ),
            "test",
        )
    for number in (1, 2, 3):  # hello's backlog comes first
        open_pull(stack, number)
    wait_for(lambda: len(all_builds(stack)) == 3 or None, 60, what="hello's three builds")
    push_develop(stack)
    wait_for(lambda: len(all_builds(stack)) == 4 or None, 60, what="other's build")

    stack.start_buildworker("build-turns")
    done = wait_for(
        lambda: (rows := all_builds(stack)) and all(r.status in ENDED for r in rows) and rows,
        300,
        0.5,
        "every build to end",
    )

    assert [b.status for b in done] == ["succeeded"] * 4, [b.error for b in done]
    started = sorted(done, key=lambda b: b.started_at)
    assert [b.service.name for b in started] == ["hello", "other", "hello", "hello"]
    for earlier, later in itertools.pairwise(started):
        clone = next(s for s in later.steps if s.name == "clone")
        assert clone.started_at >= earlier.finished_at, (
            "a second build began before the first ended"
        )
    for build in done:
        image = build.images["app"]
        registry.delete_image(image["repository"].split("/", 1)[1], image["tag"])
