"""Build and push with the real Docker engine and registry of the test environment."""

from __future__ import annotations

import re
import socket
import threading
import uuid

import docker.errors
import pytest

from buildworker.errors import BuildStopped, PermanentBuildError, TransientBuildError
from buildworker.images import build_image, push_image, remove_image
from buildworker.names import branch_tag
from tests.fixtures.docker import TEST_LABELS
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_cleanup")]


@pytest.fixture
def context(tmp_path, base_image):
    def make(dockerfile: str):
        (tmp_path / "Dockerfile").write_text(dockerfile.format(base=base_image))
        (tmp_path / "hello.txt").write_text("hello\n")
        return tmp_path

    return make


@pytest.fixture
def repo_name():
    return f"portside-test/buildworker-{uuid.uuid4().hex[:8]}"


def test_build_and_push(docker_client, registry, context, repo_name):
    repository = f"{registry.host}/{repo_name}"
    lines: list[str] = []
    image_id = build_image(
        docker_client,
        context('FROM {base}\nARG GREETING\nCOPY hello.txt /\nRUN echo "$GREETING" > /greeting\n'),
        "Dockerfile",
        f"{repository}:abc123",
        {**TEST_LABELS, "io.portside.build": "17"},
        {"GREETING": "from-args"},
        lines.append,
        cache_from=[f"{repository}:not-built-yet"],  # a first build has no cache source
    )
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
    image = docker_client.images.get(f"{repository}:abc123")
    assert image.id == image_id
    assert image.labels["io.portside.build"] == "17"
    assert any(line.startswith("Step 1/") for line in lines)
    assert all("\n" not in line for line in lines)

    branch = branch_tag("feature/x")  # the hashed form, with "..", must be a valid tag too
    docker_client.api.tag(image_id, repository, branch)
    pushed: list[str] = []
    try:
        digest = push_image(docker_client, repository, "abc123", None, pushed.append)
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
        assert registry.manifest_digest(repo_name, "abc123") == digest
        assert any(digest in line for line in pushed)
        assert push_image(docker_client, repository, branch, None, pushed.append) == digest
        assert registry.list_tags(repo_name) == sorted(["abc123", branch])
    finally:
        registry.delete_image(repo_name, "abc123")
    assert remove_image(docker_client, f"{repository}:{branch}") is True
    assert remove_image(docker_client, f"{repository}:abc123") is True
    assert remove_image(docker_client, f"{repository}:abc123") is False


def test_broken_dockerfile_is_permanent(docker_client, context, repo_name):
    lines: list[str] = []
    with pytest.raises(PermanentBuildError, match="unknown instruction: BOGUS"):
        build_image(
            docker_client,
            context("FROM {base}\nBOGUS instruction\n"),
            "Dockerfile",
            f"{repo_name}:broken",
            TEST_LABELS,
            {},
            lines.append,
        )
    assert any("BOGUS" in line for line in lines)


def test_failing_step_is_permanent_with_the_message(docker_client, context, repo_name):
    lines: list[str] = []
    with pytest.raises(PermanentBuildError, match="returned a non-zero code: 3"):
        build_image(
            docker_client,
            context("FROM {base}\nRUN echo about to fail && exit 3\n"),
            "Dockerfile",
            f"{repo_name}:failing",
            TEST_LABELS,
            {},
            lines.append,
        )
    assert "about to fail" in lines


def test_missing_dockerfile_is_permanent(docker_client, tmp_path, repo_name):
    with pytest.raises(PermanentBuildError, match="not found"):
        build_image(docker_client, tmp_path, "Dockerfile", f"{repo_name}:x", TEST_LABELS, {}, print)


def test_push_to_a_closed_port_is_transient(docker_client, context, repo_name):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    repository = f"127.0.0.1:{port}/{repo_name}"
    build_image(
        docker_client,
        context("FROM {base}\n"),
        "Dockerfile",
        f"{repository}:t",
        TEST_LABELS,
        {},
        lambda _line: None,
    )
    with pytest.raises(TransientBuildError, match="connection refused"):
        push_image(docker_client, repository, "t", None, lambda _line: None)
    remove_image(docker_client, f"{repository}:t")


def test_push_of_an_unknown_image_is_permanent(docker_client, registry, repo_name):
    with pytest.raises(PermanentBuildError, match="does not exist"):
        push_image(docker_client, f"{registry.host}/{repo_name}", "nope", None, print)


def test_rebuild_reuses_layers_from_the_branch_image(docker_client, context, repo_name):
    ctx = context("FROM {base}\nRUN echo slow step > /step\n")
    first = build_image(
        docker_client, ctx, "Dockerfile", f"{repo_name}:main", TEST_LABELS, {}, print
    )
    lines: list[str] = []
    second = build_image(
        docker_client,
        ctx,
        "Dockerfile",
        f"{repo_name}:abc",
        TEST_LABELS,
        {},
        lines.append,
        cache_from=[f"{repo_name}:main"],
    )
    assert second == first
    assert any("Using cache" in line for line in lines)
    remove_image(docker_client, f"{repo_name}:abc")
    remove_image(docker_client, f"{repo_name}:main")


class StoppableBuild:
    """``build_image`` of ``dockerfile`` on a thread of its own, with a stop event."""

    def __init__(self, docker_client, context_dir, tag: str) -> None:
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.outcome: list[BaseException | str] = []

        def run() -> None:
            try:
                self.outcome.append(
                    build_image(
                        docker_client,
                        context_dir,
                        "Dockerfile",
                        tag,
                        TEST_LABELS,
                        {},
                        self.lines.append,
                        stop=self.stop,
                    )
                )
            except BaseException as exc:
                self.outcome.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait_for(self, pattern: str) -> re.Match[str]:
        return wait_until(
            lambda: next((m for line in self.lines if (m := re.search(pattern, line))), None),
            f"a log line matching {pattern!r}",
            60,
        )

    def stop_and_join(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)  # the stop promised: within 10 s, a sleep of 60 s
        assert not self.thread.is_alive()
        assert len(self.outcome) == 1 and isinstance(self.outcome[0], BuildStopped), self.outcome


def test_a_stopped_build_ends_at_once_and_leaves_no_container(docker_client, context, repo_name):
    """Stopped mid-``RUN sleep 60``: the build raises BuildStopped within seconds (the
    deadline is for waiting only), its step container is gone and no image was made."""
    tag = f"{repo_name}:stopped"
    build = StoppableBuild(docker_client, context("FROM {base}\nRUN sleep 60\n"), tag)
    container = build.wait_for(r"Running in (\w+)").group(1)
    assert docker_client.api.inspect_container(container)["State"]["Running"]
    build.stop_and_join()
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(container)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)


def test_a_build_printing_another_containers_id_cannot_have_it_removed_by_its_stop(
    docker_client, context, repo_name, base_image
):
    """A step's output is the build's to write: a fork's ``RUN`` echoing "Running in
    <id>" of a container Portside's agent runs (on an engine shared with an agent) must
    not get that container force-removed when the build is stopped (its author needs
    only push again to have it stopped)."""
    bystander = docker_client.containers.run(
        base_image,
        ["sleep", "300"],
        detach=True,
        labels={**TEST_LABELS, "io.portside.environment": "hello-production"},
    )
    dockerfile = f"FROM {{base}}\nRUN echo 'Running in {bystander.id}' && sleep 60\n"
    build = StoppableBuild(docker_client, context(dockerfile), f"{repo_name}:spoof")
    build.wait_for(f"^Running in {bystander.id}")
    build.stop_and_join()
    bystander.reload()
    assert bystander.status == "running"
    bystander.remove(force=True)
