"""Issue 14's proof, end to end on the real Docker engine: a pull request from a fork runs
nothing until a maintainer approves its exact commit, then only on an untrusted host, with
limits and without secrets; and each attack of ``tests/data/attacks/`` (a real compose file
and Dockerfile per attack) is refused with its key path named while production keeps
serving and a harmless preview on the same host keeps converging.

The attacks run as one batch (one build worker, one agent per host, a pull request each),
since an end-to-end build per attack would cost minutes; each attack is then judged in a
subtest of its own. Test data placeholders: ``@BASE_IMAGE@`` (the test base image),
``@PROD_CONTAINER@`` and ``@PROD_IMAGE@`` (production's container and image, known only
once it is deployed); a ``SYMLINKS`` file lists ``path -> target`` links to commit.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from sqlalchemy import select

from controlplane.crypto import SecretBox
from controlplane.models import Build, Environment, Host, Service, WebhookDelivery
from controlplane.services import variables
from tests.controlplane.test_previews_e2e import pull_request
from tests.fixtures.docker import TEST_LABELS
from tests.fixtures.processes import wait_until
from tests.fixtures.stack import Stack, wait_for
from tests.tasks.test_pipeline_e2e import REPOSITORY, finished, install, post_delivery, push

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ATTACKS_DIR = Path(__file__).resolve().parents[1] / "data" / "attacks"
PROD_DOMAIN = "prod.example.com"
SECRET = "very-secret-key"
UNTRUSTED_WORKER = {"PORTSIDE_BUILD_UNTRUSTED": "yes"}
# Names of this session's own: agents manage every container labelled with their host's
# name, and compose projects are named after environments, engine-wide; test sessions
# running at once on one engine must not take each other's containers for their own.
RUN = secrets.token_hex(3)
SERVICE = f"hello-{RUN}"
SANDBOX = f"sandbox-{RUN}"
PROD_HOST = f"prod-{RUN}"
# Statuses an attack's environment stops in (running only if an attack got through).
SETTLED = ("refused", "failed", "running", "inactive")
ANONYMOUS_VOLUME = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Attack:
    """One directory of ``tests/data/attacks``, its pull request and what the refusal names."""

    name: str
    number: int
    named: tuple[str, ...]


ATTACKS = (
    Attack("cap-add", 11, ("services.web.cap_add",)),
    Attack("device-cgroup-rules", 12, ("services.web.device_cgroup_rules",)),
    Attack("pid-container", 13, ("services.web.pid",)),
    Attack("ipc-container", 14, ("services.web.ipc",)),
    Attack("network-mode-container", 15, ("services.web.network_mode",)),
    Attack("volumes-from", 16, ("services.web.volumes_from",)),
    Attack("external-volume", 17, ("volumes.db.external",)),
    Attack("named-volume", 18, ("volumes.db.name",)),
    Attack("external-network", 19, ("networks.internal.external",)),
    Attack("nfs-driver-opts", 20, ("volumes.share.driver_opts",)),
    Attack("relative-bind", 21, ("services.web.volumes[0]",)),
    Attack("symlink-planted", 22, ("services.planter.volumes[0]", "services.reader.volumes[0]")),
    Attack("symlink-escape", 30, ("services.web.env_file",)),
    Attack("symlink-context", 31, ("services.web.build",)),
    Attack("traefik-label", 23, ("services.web.labels.traefik.http.routers.takeover.rule",)),
    Attack("configs-file", 24, ("services.web.configs",)),
    Attack("expose-scalar", 25, ("services.web.expose",)),
    Attack("alias-bomb", 26, ("alias",)),
    Attack("service-name-space", 27, ("services.my web",)),
    Attack("from-production", 28, ("@PROD_REPOSITORY@",)),
    Attack("copy-from-production", 29, ("@PROD_REPOSITORY@",)),
)
HARMLESS = Attack("harmless", 90, ())


@dataclass(frozen=True)
class Production:
    """Production, deployed from a harmless commit before any fork shows up."""

    container: str
    image: str
    repository: str


# -- test data -------------------------------------------------------------------------


def attack_files(
    name: str, substitutions: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The files of ``tests/data/attacks/<name>`` with placeholders filled, and its symlinks."""
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    for path in sorted((ATTACKS_DIR / name).iterdir()):
        text = path.read_text()
        for placeholder, value in substitutions.items():
            text = text.replace(placeholder, value)
        if path.name == "SYMLINKS":
            for line in text.splitlines():
                link, _, target = line.partition(" -> ")
                links[link.strip()] = target.strip()
        else:
            files[path.name] = text
    return files, links


def _git(repo: Path, *args: str, stdin: bytes | None = None, index: Path | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Fork Author",
        "GIT_AUTHOR_EMAIL": "fork@example.com",
        "GIT_COMMITTER_NAME": "Fork Author",
        "GIT_COMMITTER_EMAIL": "fork@example.com",
    }
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    result = subprocess.run(
        ["git", f"--git-dir={repo}", *args], input=stdin, capture_output=True, env=env, check=True
    )
    return result.stdout.decode().strip()


def commit_symlinks(repo: Path, branch: str, links: Mapping[str, str]) -> str:
    """Commit symbolic links (mode 120000) on ``branch``: the test GitHub's own commit helper
    writes regular files only. Returns the new tip."""
    parent = _git(repo, "rev-parse", f"refs/heads/{branch}")
    with tempfile.TemporaryDirectory(prefix="symlinks-") as tmp:
        index = Path(tmp, "index")
        _git(repo, "read-tree", parent, index=index)
        for link, target in links.items():
            blob = _git(repo, "hash-object", "-w", "--stdin", stdin=target.encode())
            _git(repo, "update-index", "--add", "--cacheinfo", f"120000,{blob},{link}", index=index)
        tree = _git(repo, "write-tree", index=index)
    sha = _git(repo, "commit-tree", tree, "-p", parent, "-m", "Add symlinks")
    _git(repo, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def open_fork_pr(stack: Stack, attack: Attack, substitutions: Mapping[str, str]) -> str:
    """Push the attack's files to a branch, open a pull request from a fork; its head SHA."""
    state = stack.github.state
    branch = f"fork-{attack.name}"
    files, links = attack_files(attack.name, substitutions)
    sha = state.commit(REPOSITORY, files, branch=branch, message=f"Attack: {attack.name}")
    if links:
        sha = commit_symlinks(state.repository(REPOSITORY).path, branch, links)
    state.add_pull_request(
        REPOSITORY, attack.number, branch, base_ref="master", head_full_name="someone/Hello-World"
    )
    post_delivery(
        stack,
        "pull_request",
        pull_request(stack, "opened", branch, fork=True, number=attack.number),
    )
    return sha


# -- reading the state ----------------------------------------------------------------


def environment(stack: Stack, number: int) -> Environment | None:
    with stack.database.session_scope() as session:
        return session.scalar(
            select(Environment).where(Environment.name == f"{SERVICE}-pr-{number}")
        )


def awaiting(stack: Stack, number: int, head: str | None = None) -> Environment | None:
    """The preview of PR ``number`` once it awaits approval (of commit ``head``, if given)."""
    env = environment(stack, number)
    if env is None or env.status != "awaiting_approval":
        return None
    return env if head is None or env.head_sha == head else None


def builds_of(stack: Stack, environment_id: int) -> list[Build]:
    with stack.database.session_scope() as session:
        return list(
            session.scalars(
                select(Build).where(Build.environment_id == environment_id).order_by(Build.id)
            )
        )


def containers_of(docker_client: docker.DockerClient, name: str) -> list[Any]:
    """Every container of environment ``name``: labelled by the agent or by compose."""
    found: dict[str, Any] = {}
    for label in (f"io.portside.environment={name}", f"com.docker.compose.project={name}"):
        for container in docker_client.containers.list(all=True, filters={"label": label}):
            found[container.id] = container
    return list(found.values())


def refused_settings(container: Any, routed_port: int = 8080) -> list[str]:
    """What the policy refuses, as Docker actually applied it to ``container``."""
    config = container.attrs["HostConfig"]
    found = []
    if config.get("Privileged"):
        found.append("privileged")
    found += [f"cap_add {cap}" for cap in config.get("CapAdd") or []]
    found += [f"device {device}" for device in config.get("Devices") or []]
    found += [f"device_cgroup_rule {rule}" for rule in config.get("DeviceCgroupRules") or []]
    for key in ("PidMode", "IpcMode", "NetworkMode", "UsernsMode", "CgroupParent"):
        value = str(config.get(key) or "")
        if value.startswith("container:") or value == "host" or (key == "CgroupParent" and value):
            found.append(f"{key} {value}")
    found += [f"volumes_from {source}" for source in config.get("VolumesFrom") or []]
    found += [f"security_opt {opt}" for opt in config.get("SecurityOpt") or []]
    found += [f"sysctl {key}" for key in config.get("Sysctls") or {}]
    owner = container.labels.get("io.portside.environment") or "\0"
    for mount in container.attrs.get("Mounts") or []:
        name = str(mount.get("Name") or "")
        if mount.get("Type") != "volume":
            found.append(f"{mount.get('Type')} mount of {mount.get('Source')}")
        elif owner not in name and not ANONYMOUS_VOLUME.fullmatch(name):
            found.append(f"volume {name}, not one of this environment's")
    for port, bindings in (config.get("PortBindings") or {}).items():
        for binding in bindings or []:
            if binding.get("HostIp") != "127.0.0.1" or port != f"{routed_port}/tcp":
                found.append(f"host port {binding.get('HostIp')}:{binding.get('HostPort')}->{port}")
    found += [
        f"label {key}={value}"
        for key, value in container.labels.items()
        if key.startswith("traefik.") and f"Host(`{PROD_DOMAIN}`)" in value
    ]
    return found


def serves(address: str | None, text: str) -> bool:
    if not address:
        return False
    try:
        return text in requests.get(f"http://{address}/", timeout=2).text
    except requests.RequestException:
        return False


def wait_serving(stack: Stack, number: int, text: str) -> None:
    """Wait for PR ``number``'s preview to serve ``text``; say where it stands if it never does."""

    def described() -> str:
        env = environment(stack, number)
        if env is None:
            return "no such environment"
        builds = [(b.id, b.status, b.untrusted, b.error) for b in builds_of(stack, env.id)]
        return f"{env.name}: {env.status} ({env.status_reason}) at {env.address}; builds {builds}"

    wait_until(
        lambda: (env := environment(stack, number)) is not None and serves(env.address, text),
        f"preview {number} to serve {text!r}",
        300,
        0.5,
        described,
    )


def host_converged(stack: Stack, name: str) -> bool:
    with stack.database.session_scope() as session:
        host = session.scalar(select(Host).where(Host.name == name))
        return host is not None and host.applied_generation >= host.generation


# -- setting the scene ------------------------------------------------------------------


def with_domain_and_secret(stack: Stack, domain: str) -> None:
    with stack.database.session_scope() as session:
        service = session.scalar(select(Service))
        assert service is not None
        service.domain = domain
        variables.set_variable(
            session,
            SecretBox.from_settings(stack.settings),
            service.id,
            name="API_KEY",
            value=SECRET,
            actor="test",
        )


def isolate(stack: Stack, host: str) -> None:
    """The service (``install``'s "hello" on "web-1") renamed to this session's own name,
    on a host of its own (see ``RUN``)."""
    host_id = stack.create_host(host)
    with stack.database.session_scope() as session:
        service = session.scalar(select(Service))
        assert service is not None
        service.name = SERVICE
        service.host_id = host_id
        for env in session.scalars(select(Environment).where(Environment.service_id == service.id)):
            env.name = SERVICE
            env.host_id = host_id


def serving_production(stack: Stack) -> Environment | None:
    with stack.database.session_scope() as session:
        env = session.scalar(select(Environment).where(Environment.name == SERVICE))
    ok = env is not None and env.status == "running" and serves(env.address, "production")
    return env if ok else None


def deploy_production(stack: Stack, docker_client: docker.DockerClient) -> Production:
    sha = push(stack, {"index.html": "production\n"}, 1_700_001_000)
    build = wait_for(lambda: finished(stack, sha), 300, 0.5, "production's build")
    assert build.status == "succeeded", build.error
    assert build.untrusted is False

    wait_for(lambda: serving_production(stack), 300, 0.5, "production to serve")
    image = build.images["app"]
    (container,) = [
        c
        for c in containers_of(docker_client, SERVICE)
        if image["digest"] in c.attrs["Config"]["Image"]
    ]
    return Production(
        container=container.name,
        image=f"{image['repository']}:{image['tag']}",
        repository=image["repository"],
    )


@pytest.fixture
def decoys(docker_client: docker.DockerClient, docker_cleanup: None) -> None:
    """Production's database volume and the control plane's network, for the attacks that
    name them: without them compose would fail for a reason of its own and prove nothing.
    Labelled, so ``docker_cleanup`` removes them."""
    docker_client.volumes.create("prod_db", labels=TEST_LABELS)
    docker_client.networks.create("portside_internal", labels=TEST_LABELS)


# -- the tests ----------------------------------------------------------------------------


@pytest.mark.timeout(1200)
def test_every_attack_from_a_fork_is_refused_and_harms_nothing(
    stack: Stack,
    base_image: str,
    docker_client: docker.DockerClient,
    registry: Any,
    docker_cleanup: None,
    decoys: None,
    subtests: pytest.Subtests,
) -> None:
    install(stack, base_image)
    with_domain_and_secret(stack, PROD_DOMAIN)
    isolate(stack, PROD_HOST)
    stack.create_host(SANDBOX, untrusted=True)
    stack.start_buildworker("build-untrusted", UNTRUSTED_WORKER)
    stack.start_agent(PROD_HOST)
    stack.start_agent(SANDBOX)
    production = deploy_production(stack, docker_client)
    substitutions = {
        "@BASE_IMAGE@": base_image,
        "@PROD_CONTAINER@": production.container,
        "@PROD_IMAGE@": production.image,
        "@PROD_REPOSITORY@": production.repository,
    }

    for attack in (*ATTACKS, HARMLESS):
        open_fork_pr(stack, attack, substitutions)
    for attack in (*ATTACKS, HARMLESS):
        waiting = wait_for(partial(awaiting, stack, attack.number), 60, 0.2, attack.name)
        response = stack.approve(waiting.id)
        assert response.status_code == 200, response.text

    def settled() -> bool:
        return all(
            (env := environment(stack, attack.number)) is not None and env.status in SETTLED
            for attack in ATTACKS
        )

    wait_for(settled, 900, 1, "every attack to be refused (or to fail)")
    wait_serving(stack, HARMLESS.number, "harmless")
    wait_for(lambda: host_converged(stack, SANDBOX), 120, 0.5, "the untrusted host to converge")

    for attack in ATTACKS:
        with subtests.test(msg=attack.name):
            env = environment(stack, attack.number)
            assert env is not None
            builds = builds_of(stack, env.id)
            told = "\n".join([env.status_reason or "", *(b.error or "" for b in builds)])
            assert env.status == "refused" or (
                builds and builds[-1].status == "failed" and env.status != "running"
            ), f"{attack.name}: {env.status}: {told}"
            for key_path in attack.named:
                expected = substitutions.get(key_path, key_path)
                assert expected in told, f"{attack.name} should name {expected}: {told}"
            left = containers_of(docker_client, env.name)
            assert not left, [(c.name, refused_settings(c)) for c in left]

    with subtests.test(msg="the harmless preview carries no refused setting"):
        for container in containers_of(docker_client, f"{SERVICE}-pr-{HARMLESS.number}"):
            assert refused_settings(container) == [], container.name
    with subtests.test(msg="production keeps serving"):
        # Read afresh: a concurrent test session's docker_cleanup on a shared engine may
        # have removed the container, and the agent restarted it on another port.
        wait_for(lambda: serving_production(stack), 60, 0.5, "production to serve")
    registry.delete_image(
        production.repository.split("/", 1)[1], production.image.rsplit(":", 1)[1]
    )


@pytest.mark.timeout(900)
def test_a_harmless_fork_pr_waits_for_approval_per_commit_and_runs_contained(
    stack: Stack,
    base_image: str,
    docker_client: docker.DockerClient,
    registry: Any,
    docker_cleanup: None,
) -> None:
    install(stack, base_image)
    with_domain_and_secret(stack, "hello.example.com")
    isolate(stack, PROD_HOST)
    sandbox = stack.create_host(SANDBOX, untrusted=True)
    worker = stack.start_buildworker("build-untrusted", UNTRUSTED_WORKER)
    stack.start_agent(SANDBOX)
    state = stack.github.state
    number = 7
    first = open_fork_pr(stack, Attack("harmless", number, ()), {"@BASE_IMAGE@": base_image})

    env = wait_for(lambda: awaiting(stack, number), 60, 0.2, "the fork preview to wait")
    with stack.database.session_scope() as session:
        delivery = session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.event == "pull_request")
        )
        assert delivery is not None and delivery.status == "processed"
        assert session.scalars(select(Build)).all() == []
    assert "] received" not in worker.log()  # no build task reached the worker
    assert not containers_of(docker_client, env.name)
    wait_for(
        lambda: any(
            s.sha == first and s.state == "pending" and "approv" in (s.description or "").lower()
            for s in state.statuses
        ),
        60,
        0.5,
        "a pending commit status saying the commit awaits approval",
    )
    wait_for(
        lambda: any("approve" in c.body.lower() for c in state.comments),
        60,
        0.5,
        "the PR comment saying how to approve",
    )

    response = stack.approve(env.id)
    assert response.status_code == 200, response.text
    wait_serving(stack, number, "harmless")
    approved = environment(stack, number)
    assert approved is not None and approved.host_id == sandbox
    assert approved.approved_sha == first
    (build,) = builds_of(stack, approved.id)
    assert "] received" in worker.log()  # the check before approval could have seen one
    assert build.untrusted is True and build.commit_sha == first
    image = build.images["web"]
    assert "/pr-7" in image["repository"] and image["tag"] != "fork-harmless", image
    containers = containers_of(docker_client, env.name)
    assert containers
    for container in containers:
        config = container.attrs["HostConfig"]
        assert container.labels.get("io.portside.host") == SANDBOX
        assert config.get("NanoCpus") or config.get("CpuQuota"), "no CPU limit"
        assert config.get("Memory"), "no memory limit"
        assert config.get("PidsLimit") and config["PidsLimit"] > 0, "no pids limit"
        assert refused_settings(container) == []
        assert not config.get("Binds")
        assert not any(e.startswith("API_KEY=") for e in container.attrs["Config"]["Env"])
        assert not any(SECRET in e for e in container.attrs["Config"]["Env"])
    published = [
        (port, binding["HostIp"])
        for container in containers
        for port, bindings in (container.attrs["HostConfig"].get("PortBindings") or {}).items()
        for binding in bindings or []
    ]
    assert published == [("8080/tcp", "127.0.0.1")]

    second = state.commit(
        REPOSITORY, {"index.html": "harmless, pushed again\n"}, branch="fork-harmless"
    )
    state.pull_requests[(REPOSITORY.lower(), number)].head_sha = second
    post_delivery(
        stack,
        "pull_request",
        pull_request(stack, "synchronize", "fork-harmless", fork=True, number=number),
    )
    again = wait_for(partial(awaiting, stack, number, second), 60, 0.2, "a new approval")
    assert again.approved_sha != second
    assert [b.commit_sha for b in builds_of(stack, again.id)] == [first]
    registry.delete_image(image["repository"].split("/", 1)[1], image["tag"])
