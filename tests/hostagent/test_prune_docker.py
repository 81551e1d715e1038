"""Image pruning against the real engine: after ten deploys an agent keeps exactly the
images its environments run and their last K rollback targets, and those a container uses.

Every image here is built by this test with content of its own (no other test's image
can share an ID with one of them), so the pruner cannot touch anything else. Each is then
left with only its ``repo@digest`` name, as on an agent's host that pulled it by digest
(where it was built, the build's tag is another name, which the agent leaves alone).
"""

from __future__ import annotations

import json
import logging

import docker.errors
import pytest

from hostagent.agent import AgentState, run_once
from hostagent.apply import Applier
from hostagent.prune import HISTORY_FILE, Pruner
from hostagent.settings import DEFAULT_KEEP_IMAGES
from tests.fixtures.docker import TEST_LABELS
from tests.hostagent.test_apply_docker import (  # noqa: F401 - images and uid are fixtures
    PUBLISH,
    FakeSource,
    app_env,
    desired,
    images,
    only,
    uid,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_cleanup")]


def present(docker_client, reference: str) -> bool:
    try:
        docker_client.images.get(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


def as_pulled(docker_client, reference: str) -> str:
    """The image as an agent's host has it: pulled by ``reference`` (repo@digest), with
    no tag of the build's (removing the last tag removes the image; it is pulled again)."""
    for tag in docker_client.images.get(reference).tags:
        docker_client.images.remove(tag)
    docker_client.api.pull(reference)
    assert docker_client.images.get(reference).tags == []
    return reference


def test_ten_deploys_keep_exactly_the_rollback_images(docker_client, images, tmp_path, uid, caplog):  # noqa: F811 - fixtures
    caplog.set_level(logging.INFO, logger="hostagent.prune")
    host, app, other, leaving = f"prune-{uid}", f"a-{uid}", f"b-{uid}", f"c-{uid}"
    versions = [as_pulled(docker_client, images(f"v{n}", page=f"{uid} v{n}")) for n in range(1, 11)]
    other_image = as_pulled(docker_client, images("other", page=f"{uid} other"))
    leaving_image = as_pulled(docker_client, images("leaving", page=f"{uid} leaving"))
    state_dir = tmp_path / "state"
    pruner = Pruner(docker_client, state_dir, DEFAULT_KEEP_IMAGES)
    applier = Applier(
        docker_client, state_dir, publish_host=PUBLISH, stop_timeout=1, poll_seconds=0.2
    )
    agent = AgentState(applier, publish_host=PUBLISH, pruner=pruner)
    source = FakeSource()
    # A container no agent manages uses the first version: it stays while that container does.
    bystander = docker_client.containers.create(versions[0], labels=TEST_LABELS)

    for number, image in enumerate(versions, 1):
        envs = [app_env(app, image, 100 + number), app_env(other, other_image, 1)]
        if number < len(versions):  # the last deploy also tears this environment down
            envs.append(app_env(leaving, leaving_image, 2))
        source.state = desired(host, *envs, generation=number)
        report = run_once(agent, source).report
        assert report is not None and only(report, app)["state"] == "running"

    kept = versions[-(DEFAULT_KEEP_IMAGES + 1) :]
    pruned = [*versions[1 : -(DEFAULT_KEEP_IMAGES + 1)], leaving_image]
    assert [ref for ref in versions if present(docker_client, ref)] == [versions[0], *kept]
    assert present(docker_client, other_image)
    assert not any(present(docker_client, ref) for ref in pruned)
    assert pruner.counts() == (len(pruned), 0)
    assert sum("pruned image" in r.getMessage() for r in caplog.records) == len(pruned)
    history = json.loads((state_dir / HISTORY_FILE).read_text())
    assert sorted(history["environments"]) == [app, other]
    assert sorted(history["environments"][app]) == [str(100 + n) for n in range(7, 11)]
    assert len(history["pending"]) == 1  # the first version, waiting for its container

    bystander.remove()
    pruner.run(source.state)
    assert not present(docker_client, versions[0])
    assert all(present(docker_client, ref) for ref in [*kept, other_image])
    assert pruner.counts() == (len(pruned) + 1, 0)
    assert json.loads((state_dir / HISTORY_FILE).read_text())["pending"] == []


def test_an_image_that_also_has_a_name_the_agent_did_not_use_keeps_it(
    docker_client,
    images,  # noqa: F811 - a fixture
    tmp_path,
    uid,  # noqa: F811 - a fixture
    caplog,
):
    """On an engine shared with a build worker (or an operator), the image a deployment
    ran may carry other names too: the agent takes away only its own, and the image stays
    under the others'."""
    caplog.set_level(logging.INFO, logger="hostagent.prune")
    host, app = f"prune-{uid}", f"a-{uid}"
    first = as_pulled(docker_client, images("one", page=f"{uid} one"))
    second = as_pulled(docker_client, images("two", page=f"{uid} two"))
    operators = f"operator-{uid}:mine"
    docker_client.images.get(first).tag(operators)
    state_dir = tmp_path / "state"
    pruner = Pruner(docker_client, state_dir, 0)
    applier = Applier(
        docker_client, state_dir, publish_host=PUBLISH, stop_timeout=1, poll_seconds=0.2
    )
    agent = AgentState(applier, publish_host=PUBLISH, pruner=pruner)
    source = FakeSource()

    for number, image in enumerate([first, second], 1):
        source.state = desired(host, app_env(app, image, number), generation=number)
        report = run_once(agent, source).report
        assert report is not None and only(report, app)["state"] == "running"

    assert not present(docker_client, first)  # the name the deployment used is gone
    assert present(docker_client, operators)  # the image stays under the operator's
    assert present(docker_client, second)
    assert pruner.counts() == (0, 0)
    assert any("which the agent did not use" in r.getMessage() for r in caplog.records)
    history = json.loads((state_dir / HISTORY_FILE).read_text())
    assert history["pending"] == []
    assert list(history["references"]) == [docker_client.images.get(second).id]
