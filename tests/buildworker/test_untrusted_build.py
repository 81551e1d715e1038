"""A fork's build on the real Docker engine: no network while it builds, images under its
pull request's own name (never a branch tag, even for a fork branch called main), and no
image of Portside's registry to build on. A worker refuses a kind of build it does not
take before it claims anything."""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from buildworker.api import ControlPlane
from buildworker.errors import BuildError, PermanentBuildError
from buildworker.names import image_repository, pull_request_repository
from buildworker.runner import StepRunner, WorkerConfig, WrongWorker
from buildworker.steplog import BuildLog
from tests.fixtures.docker import TEST_LABELS, Registry

# Nothing listens there: a runner that called its control plane would fail differently.
NO_CONTROL_PLANE = "http://127.0.0.1:9"


class Worker:
    """A StepRunner whose build step runs on a prepared checkout (clone is git's test)."""

    def __init__(self, client: docker.DockerClient, registry: str, root: Path) -> None:
        self.lines: list[str] = []
        self.runner = StepRunner(
            ControlPlane(NO_CONTROL_PLANE, "unused"),
            client,
            WorkerConfig(node="build-test", registry=registry, workspace_root=root),
            lambda _build_id, lines: self.lines.extend(lines),
        )
        self.repository = f"portside-test/fork-{uuid.uuid4().hex[:8]}"
        self.next_id = 1

    def build(
        self, dockerfile: str, *, untrusted: bool, build_args: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Run the build step of a new build of ``dockerfile`` on branch main; return its
        state (what the step leaves for the push)."""
        spec: dict[str, Any] = {
            "build_id": self.next_id,
            "attempt": 1,
            "repository": self.repository,
            "commit_sha": uuid.uuid4().hex + "0" * 8,
            "branch": "main",
            "compose_path": None,
            "compose_allow": [],
            "build_args": build_args or {},
            "untrusted": untrusted,
            "pr_number": 7 if untrusted else None,
        }
        self.next_id += 1
        checkout = self.runner.workspace(spec["build_id"], 1) / "src"
        checkout.mkdir(parents=True)
        (checkout / "Dockerfile").write_text(dockerfile)
        state: dict[str, Any] = {"images": {}}
        self.runner.builder.build(spec, state, BuildLog(self.runner.sink, spec["build_id"]))
        return state


@pytest.fixture
def worker(docker_client: docker.DockerClient, registry: Registry, tmp_path: Path) -> Worker:
    return Worker(docker_client, registry.host, tmp_path)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
def test_a_fork_builds_without_network_and_never_writes_a_branch_tag(
    worker: Worker, docker_client: docker.DockerClient, registry: Registry, base_image: str
) -> None:
    dockerfile = f"FROM {base_image}\nRUN cat /proc/net/dev\n"
    production = image_repository(registry.host, worker.repository)
    state = worker.build(dockerfile, untrusted=False)
    assert state["images"]["app"]["branch_tag"] == "main"
    assert any("eth0:" in line for line in worker.lines)  # a trusted build has a network
    production_id = docker_client.images.get(f"{production}:main").id

    worker.lines.clear()
    state = worker.build(dockerfile, untrusted=True)  # a fork's branch called main
    interfaces = [line.split(":")[0].strip() for line in worker.lines if ":" in line]
    assert "lo" in interfaces
    assert not any(name.startswith(("eth", "veth")) for name in interfaces)
    assert not any("Using cache" in line for line in worker.lines)

    image = state["images"]["app"]
    fork = pull_request_repository(registry.host, worker.repository, 7)
    assert image == {"repository": fork, "tag": image["tag"], "branch_tag": None}
    assert fork == f"{production}/pr-7"
    assert docker_client.images.get(f"{production}:main").id == production_id
    built = docker_client.images.get(f"{fork}:{image['tag']}")
    assert [tag for tag in built.tags if tag != f"{fork}:{image['tag']}"] == []


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
def test_a_fork_may_not_build_on_an_image_of_the_portside_registry(
    worker: Worker, docker_client: docker.DockerClient, registry: Registry, base_image: str
) -> None:
    worker.build(f"FROM {base_image}\nRUN echo production > /data\n", untrusted=False)
    production = f"{image_repository(registry.host, worker.repository)}:main"
    port = registry.host.rpartition(":")[2]
    fork = pull_request_repository(registry.host, worker.repository, 7)

    for dockerfile, line in (
        (f"FROM {production}\n", 1),
        (f"FROM localhost:{port}/{production.split('/', 1)[1]}\n", 1),
        (f"FROM {base_image} AS base\nCOPY --from={production} /data /data\n", 2),
        (f"ARG BASE={base_image}\nFROM $BASE\n", 2),  # the build argument wins
    ):
        worker.lines.clear()
        with pytest.raises(PermanentBuildError, match="a fork's build may use only public"):
            worker.build(dockerfile, untrusted=True, build_args={"BASE": production})
        assert any(f"Dockerfile line {line}: " in text for text in worker.lines)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(fork)  # nothing was built

    # An image a Portside build made is refused under any other name it has locally.
    alias = f"portside-test/alias-{uuid.uuid4().hex[:8]}"
    docker_client.images.get(production).tag(alias, "x")
    try:
        with pytest.raises(PermanentBuildError, match="built by Portside"):
            worker.build(f"FROM {alias}:x\n", untrusted=True)
    finally:
        docker_client.images.remove(f"{alias}:x")
    # A public base image (here the test's own, built outside Portside) is fine.
    worker.build(f"FROM {base_image}\nRUN true\n", untrusted=True)


@pytest.mark.parametrize(
    ("mode", "untrusted"), [("no", True), ("only", False)], ids=["default-fork", "only-trusted"]
)
def test_a_worker_refuses_a_kind_of_build_it_does_not_take_before_claiming(
    tmp_path: Path, mode: str, untrusted: bool
) -> None:
    lines: list[str] = []
    runner = StepRunner(
        ControlPlane(NO_CONTROL_PLANE, "unused"),
        docker.DockerClient(base_url="unix:///nonexistent.sock", version="1.45"),
        WorkerConfig("build-x", "127.0.0.1:5001", tmp_path, untrusted=mode),  # type: ignore[arg-type]
        lambda _build_id, new: lines.extend(new),
    )
    with pytest.raises(WrongWorker, match="build 5 is"):
        runner.run("clone", 5, 1, untrusted=untrusted)
    assert lines == []
    assert list(tmp_path.iterdir()) == []  # no workspace, no clone


def local_base(client: docker.DockerClient, base_image: str, lines: str) -> str:
    """A base image built outside Portside from ``lines``, under a name of no registry."""
    tag = f"portside-test/base-{uuid.uuid4().hex[:8]}:1"
    client.images.build(
        fileobj=io.BytesIO(f"FROM {base_image}\n{lines}".encode()), tag=tag, labels=TEST_LABELS
    )
    return tag


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
@pytest.mark.parametrize("untrusted", [False, True], ids=["production", "fork"])
def test_an_image_carrying_routing_labels_is_refused_and_removed(
    worker: Worker,
    docker_client: docker.DockerClient,
    registry: Registry,
    base_image: str,
    untrusted: bool,
) -> None:
    """Review finding 1: containers inherit their image's labels and Traefik reads them,
    so a LABEL in the Dockerfile, or in its base image, could take over a domain."""
    routed = local_base(docker_client, base_image, "LABEL Traefik.enable=true\n")
    repository = (
        pull_request_repository(registry.host, worker.repository, 7)
        if untrusted
        else image_repository(registry.host, worker.repository)
    )
    for dockerfile, label in (
        (
            f"FROM {base_image}\nLABEL traefik.enable=true "
            'traefik.http.routers.pwn.rule="Host(`victim.example.com`)" '
            "traefik.http.routers.pwn.priority=100000\n",
            "traefik.http.routers.pwn.rule",
        ),
        (f"FROM {base_image}\nLABEL com.docker.compose.project=prod\n", "com.docker.compose"),
        (f"FROM {routed}\n", "Traefik.enable"),  # the base image's label
    ):
        with pytest.raises(
            PermanentBuildError, match=f"only Portside may set: .*{re.escape(label)}"
        ):
            worker.build(dockerfile, untrusted=untrusted)
        assert docker_client.images.list(name=repository) == []  # removed
    # Other labels are the application's own; Portside's build label is its only one.
    state = worker.build(
        f"FROM {base_image}\nLABEL org.opencontainers.image.source=https://x.example\n",
        untrusted=untrusted,
    )
    image = state["images"]["app"]
    labels = docker_client.images.get(f"{image['repository']}:{image['tag']}").labels
    assert labels["io.portside.build"] and labels["org.opencontainers.image.source"]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
def test_a_fork_may_not_build_on_an_image_with_onbuild_triggers(
    worker: Worker, docker_client: docker.DockerClient, registry: Registry, base_image: str
) -> None:
    """Review finding 6: a base image's ONBUILD instructions run in the build that uses
    it, unseen by the checks of the Dockerfile (here one copying out of production)."""
    worker.build(f"FROM {base_image}\nRUN echo production > /data\n", untrusted=False)
    production = f"{image_repository(registry.host, worker.repository)}:main"
    triggered = local_base(
        docker_client, base_image, f"ONBUILD COPY --from={production} /data /stolen\n"
    )
    fork = pull_request_repository(registry.host, worker.repository, 7)
    with pytest.raises(PermanentBuildError, match=r"line 2: FROM \S+ has ONBUILD instructions"):
        worker.build(f"FROM {base_image} AS first\nFROM {triggered}\n", untrusted=True)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(fork)  # nothing was built


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
def test_a_forks_base_image_is_pulled_before_the_build(
    worker: Worker, docker_client: docker.DockerClient
) -> None:
    """An absent base is pulled (anonymously) to be inspected, not left to the build:
    these machines pull nothing, so the pull itself is what fails, before any build."""
    absent = f"portside-test/absent-{uuid.uuid4().hex[:8]}:1"
    with pytest.raises(BuildError, match=re.escape(absent)):
        worker.build(f"FROM {absent}\n", untrusted=True)
    assert any(line == f"pulling {absent}" for line in worker.lines)
    assert not any(line.startswith("building app") for line in worker.lines)
