"""The pipeline benchmark: Portside's overhead over doing the same clone + build + push by hand.

One run, on this machine, against 127.0.0.1 only:

1. a PostgreSQL database of its own (migrated, dropped at the end), Redis db 10 (flushed
   before and after), the test GitHub server (``tests.githubserver``) in a thread of this
   process with a GitHub App, an installation and one repository of a name of its own;
2. Portside as it runs for real: ``controlplane.wsgi:app`` under gunicorn with
   ``deploy/gunicorn.conf.py``, a ``portside worker`` (control queue) and one
   ``portside buildworker`` process, a host and a service tracking the repository's
   ``main`` branch;
3. K repetitions of each, interleaved (shell, Portside, Portside, shell, ...) so both
   see the same engine, registry and machine load, after one untimed warm-up of each:
   - the shell baseline: ``git init``; ``git fetch --depth 1 <clone url> <sha>`` with the
     installation token in ``http.extraHeader``; ``git checkout``; ``docker build`` (the
     classic builder, as the Docker SDK uses) of the same Dockerfile; ``docker push``
     to the registry — timed from the start of the script to its end;
   - Portside: a signed ``push`` delivery of a new commit, timed from the POST to the
     deployment row (its ``created_at``), and from the 202 to the ``clone`` step's
     ``started_at``; the step rows give where the time went.
   Every commit has contents of its own, so neither side gets a layer the other built.
4. the verdict against the targets (median end-to-end / median shell <= 1.3; p50 of
   202 -> clone start < 25 ms), then clean-up: the images and registry manifests made
   here, the database, the Redis db, the workspaces.

Exit status: 0 when the run worked (even if a target is missed), 1 when it broke.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import datetime as dt
import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import docker
import docker.errors
import requests
from redis import Redis
from sqlalchemy import Engine, create_engine, select

from bench.common import (
    ROOT,
    Figure,
    Server,
    broken,
    gunicorn_setting,
    redis_url,
    temporary_database,
)
from bench.webhooks import PAYLOADS, admin_database_url
from controlplane import migrate
from controlplane.db import Database
from controlplane.github.webhooks import signature
from controlplane.models import Build, Deployment, WebhookDelivery
from controlplane.services import catalog, hosts, servicerules, tokens
from controlplane.settings import Secret, Settings
from tests.githubserver.server import GitHubServer, GitHubState, generate_private_key_pem

WEBHOOK_SECRET = "portside-bench-pipeline-secret"  # noqa: S105 - a throw-away test secret
SECRET_KEY = "portside-bench-pipeline-key-0123456789"  # noqa: S105 - a throw-away test key
APP_ID = 424243
INSTALLATION = 8_675_309
OWNER = "portside-bench"
BRANCH = "main"
TARGET_RATIO = 1.3
TARGET_CLONE_START_MS = 25.0  # issue 20
STEPS = ("clone", "build", "push", "upload_compose", "record_deployment")

T = TypeVar("T")


class BenchError(Exception):
    """The run itself broke: the figures cannot be trusted."""


# ------------------------------------------------------------------------------------
# Environment
# ------------------------------------------------------------------------------------


def registry_address() -> str:
    return os.environ.get("PORTSIDE_TEST_REGISTRY", "127.0.0.1:5001")


def base_image() -> str:
    return os.environ.get("PORTSIDE_TEST_BASE_IMAGE", "portside-test/base:latest")


def clean_environ() -> dict[str, str]:
    """This process's environment without any PORTSIDE_* setting but the tests' own."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PORTSIDE_") or name.startswith("PORTSIDE_TEST_")
    }


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, every: float = 0.02
) -> T:
    """Poll ``condition`` until it returns something truthy; BenchError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class PortsideProcess:
    """A ``portside`` subcommand in a session of its own, logging to a file."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log_path = log
        self._log: IO[bytes] = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", *args],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited while starting:\n{self.log()[-3000:]}")
            return "ready." in self.log()

        wait_for(ready, timeout, f"{self.name} to be ready", every=0.2)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


# ------------------------------------------------------------------------------------
# The GitHub side: commits and signed deliveries
# ------------------------------------------------------------------------------------


@dataclass
class GitHubSide:
    server: GitHubServer
    repository: str  # owner/name

    @property
    def state(self) -> GitHubState:
        return self.server.state

    def commit(self, marker: str) -> str:
        """A new commit on ``main`` whose files no earlier commit had (no shared layer)."""
        return self.state.commit(
            self.repository,
            {
                "Dockerfile": f"FROM {base_image()}\nCOPY index.html /www/index.html\n"
                'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n',
                "index.html": f"{marker} {uuid.uuid4()}\n",
            },
            branch=BRANCH,
            message=f"bench {marker}",
        )

    def clone_url(self) -> str:
        return str(self.server.repository_json(self.repository)["clone_url"])

    def installation_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(
            (PAYLOADS / "installation__created.payload.json").read_bytes()
        )
        payload["installation"]["id"] = INSTALLATION
        repo = self.state.repository(self.repository)
        payload["repositories"] = [
            {"id": repo.id, "name": repo.name, "full_name": self.repository, "private": True}
        ]
        return payload

    def push_payload(self, sha: str, pushed_at: int) -> dict[str, Any]:
        payload: dict[str, Any] = copy.deepcopy(
            json.loads((PAYLOADS / "push__with-new-branch.payload.json").read_bytes())
        )
        payload["ref"] = f"refs/heads/{BRANCH}"
        payload["installation"]["id"] = INSTALLATION
        payload["repository"].update(
            {
                key: value
                for key, value in self.server.repository_json(self.repository).items()
                if key in ("id", "clone_url", "full_name", "name")
            }
        )
        payload["repository"]["pushed_at"] = pushed_at
        payload["after"] = sha
        payload["head_commit"]["id"] = sha
        return payload


def post_delivery(port: int, event: str, payload: dict[str, Any]) -> tuple[int, float, float]:
    """POST a signed delivery; return (delivery id, time.time() before, after the 202)."""
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "123456",
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-GitHub-Hook-Installation-Target-ID": str(APP_ID),
        "X-Hub-Signature-256": signature(body, WEBHOOK_SECRET),
        "User-Agent": "GitHub-Hookshot/044aadd",
        "Content-Type": "application/json",
    }
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.connect()
        sent = time.time()
        connection.request("POST", "/webhooks/github", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        answered = time.time()
    finally:
        connection.close()
    if response.status != 202:
        raise BenchError(f"delivery answered {response.status}: {answer[:500]!r}")
    return int(json.loads(answer)["id"]), sent, answered


# ------------------------------------------------------------------------------------
# The shell baseline
# ------------------------------------------------------------------------------------

SHELL_SCRIPT = r"""
set -euo pipefail
stamp() { echo "$1 $(date +%s.%N)"; }
stamp start
cd "$WORKSPACE"
git init --quiet .
git -c http.extraHeader="$GIT_AUTH" fetch --depth 1 --no-tags --quiet -- "$CLONE_URL" "$SHA"
git -c advice.detachedHead=false checkout --quiet --detach FETCH_HEAD
stamp fetched
docker build --quiet $LABELS --tag "$IMAGE" . >/dev/null  # $LABELS: split on purpose
stamp built
docker push --quiet "$IMAGE" >/dev/null 2>&1 || docker push "$IMAGE" >/dev/null
stamp pushed
"""


@dataclass
class ShellRun:
    sha: str
    image: str
    total: float
    phases: dict[str, float]


def run_shell(
    github: GitHubSide, work_dir: Path, image_repo: str, index: int, labels: bool = False
) -> ShellRun:
    sha = github.commit(f"shell {index}")
    token = github.state.issue_token(INSTALLATION).token
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    workspace = work_dir / f"shell-{index}"
    workspace.mkdir()
    image = f"{image_repo}:{sha[:12]}"
    env = {
        **clean_environ(),
        "WORKSPACE": str(workspace),
        "GIT_AUTH": f"Authorization: Basic {basic}",
        "CLONE_URL": github.clone_url(),
        "SHA": sha,
        "IMAGE": image,
        # The same image Portside builds: with the build-id label its build step gives
        # every image (buildworker/runner.py); the classic builder adds a step for it.
        "LABELS": f"--label io.portside.build=bench-{index}" if labels else "",
        "DOCKER_BUILDKIT": "0",  # the classic builder, which the Docker SDK's build uses
        "GIT_TERMINAL_PROMPT": "0",
    }
    began = time.perf_counter()
    result = subprocess.run(
        ["bash", "-c", SHELL_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    total = time.perf_counter() - began
    shutil.rmtree(workspace, ignore_errors=True)
    if result.returncode != 0:
        raise BenchError(
            f"the shell baseline failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    stamps = {
        name: float(value)
        for name, value in (line.split() for line in result.stdout.splitlines() if line.strip())
    }
    phases = {
        "fetch": stamps["fetched"] - stamps["start"],
        "build": stamps["built"] - stamps["fetched"],
        "push": stamps["pushed"] - stamps["built"],
    }
    return ShellRun(sha, image, total, phases)


# ------------------------------------------------------------------------------------
# Portside
# ------------------------------------------------------------------------------------


@dataclass
class PortsideRun:
    sha: str
    build_id: int
    total: float  # POST -> deployment row
    to_clone_ms: float  # 202 -> clone step started_at
    post_ms: float  # the POST itself (-> 202)
    phases: dict[str, float]  # seconds


def _ts(moment: dt.datetime | None) -> float:
    if moment is None:
        raise BenchError("a timestamp the breakdown needs was never set")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def deployment_of(database: Database, sha: str) -> tuple[int, float] | None:
    with database.session_scope() as session:
        row = session.execute(
            select(Build.id, Build.status, Build.error, Deployment.created_at)
            .join(Deployment, Deployment.build_id == Build.id, isouter=True)
            .where(Build.commit_sha == sha)
        ).first()
    if row is None:
        return None
    if row.status in ("failed", "cancelled", "superseded"):
        raise BenchError(f"build of {sha[:7]} ended {row.status}: {row.error}")
    if row.created_at is None:
        return None
    return int(row.id), _ts(row.created_at)


def breakdown(database: Database, build_id: int, sent: float) -> dict[str, float]:
    """Where the time of one Portside build went, from the rows' timestamps (seconds)."""
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        delivery = session.get(WebhookDelivery, build.delivery_id)
        assert delivery is not None
        steps = {step.name: step for step in build.steps}
        deployment = session.scalar(select(Deployment).where(Deployment.build_id == build_id))
        assert deployment is not None
        marks = [
            ("POST -> delivery row", sent, _ts(delivery.received_at)),
            ("delivery row -> build row", _ts(delivery.received_at), _ts(build.created_at)),
            ("build row -> clone start", _ts(build.created_at), _ts(steps["clone"].started_at)),
        ]
        previous = "clone"
        for name in STEPS:
            step = steps[name]
            if name != "clone":
                marks.append(
                    (
                        f"  gap {previous} -> {name}",
                        _ts(steps[previous].finished_at),
                        _ts(step.started_at),
                    )
                )
            end = _ts(deployment.created_at) if name == "record_deployment" else None
            marks.append((f"step {name}", _ts(step.started_at), end or _ts(step.finished_at)))
            previous = name
    return {label: end - start for label, start, end in marks}


def run_portside(
    github: GitHubSide, server_port: int, database: Database, index: int, timeout: float
) -> PortsideRun:
    sha = github.commit(f"portside {index}")
    payload = github.push_payload(sha, int(time.time()) + index)
    _delivery, sent, answered = post_delivery(server_port, "push", payload)
    build_id, deployed_at = wait_for(
        lambda: deployment_of(database, sha), timeout, f"the deployment of {sha[:7]}"
    )
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        clone = next(step for step in build.steps if step.name == "clone")
        clone_started = _ts(clone.started_at)
    return PortsideRun(
        sha=sha,
        build_id=build_id,
        total=deployed_at - sent,
        to_clone_ms=(clone_started - answered) * 1000,
        post_ms=(answered - sent) * 1000,
        phases=breakdown(database, build_id, sent),
    )


# ------------------------------------------------------------------------------------
# Clean-up of what this run made in the engine and the registry
# ------------------------------------------------------------------------------------


def remove_images(client: docker.DockerClient, repositories: Sequence[str]) -> int:
    removed = 0
    for repository in repositories:
        for image in client.images.list(name=repository):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id, force=True)
                removed += 1
    return removed


def delete_registry_tags(registry: str, repositories: Sequence[str]) -> int:
    """Delete the manifest of every tag of ``repositories`` (paths without the host)."""
    deleted = 0
    accept = ", ".join(
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
        )
    )
    with requests.Session() as http:
        for repo in repositories:
            listing = http.get(f"http://{registry}/v2/{repo}/tags/list", timeout=10)
            if listing.status_code == 404:
                continue
            digests = set()
            for tag in listing.json().get("tags") or []:
                head = http.head(
                    f"http://{registry}/v2/{repo}/manifests/{tag}",
                    headers={"Accept": accept},
                    timeout=10,
                )
                if digest := head.headers.get("Docker-Content-Digest"):
                    digests.add(digest)
            for digest in digests:
                answer = http.delete(f"http://{registry}/v2/{repo}/manifests/{digest}", timeout=10)
                deleted += answer.status_code == 202
    return deleted


# ------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------


@dataclass
class Result:
    shell: list[ShellRun] = field(default_factory=list)
    portside: list[PortsideRun] = field(default_factory=list)
    warmup: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    gunicorn: dict[str, Any] = field(default_factory=dict)

    def verdict(self) -> dict[str, Any]:
        shell = statistics.median(run.total for run in self.shell)
        portside = statistics.median(run.total for run in self.portside)
        ratio = portside / shell
        to_clone = statistics.median(run.to_clone_ms for run in self.portside)
        return {
            "shell_median_s": round(shell, 3),
            "portside_median_s": round(portside, 3),
            "ratio": round(ratio, 3),
            "ratio_target": TARGET_RATIO,
            "ratio_pass": ratio <= TARGET_RATIO,
            "to_clone_p50_ms": round(to_clone, 1),
            "to_clone_target_ms": TARGET_CLONE_START_MS,
            "to_clone_pass": to_clone < TARGET_CLONE_START_MS,
        }


def server_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    env = clean_environ()
    env.update(
        PORTSIDE_DATABASE_URL=settings.database_url,
        PORTSIDE_REDIS_URL=settings.redis_url,
        PORTSIDE_GITHUB_WEBHOOK_SECRET=WEBHOOK_SECRET,
        PORTSIDE_GITHUB_APP_ID=str(settings.github_app_id),
        PORTSIDE_GITHUB_PRIVATE_KEY=settings.github_private_key.reveal(),
        PORTSIDE_GITHUB_API_URL=settings.github_api_url,
        PORTSIDE_REGISTRY=settings.registry,
        PORTSIDE_SECRET_KEY=SECRET_KEY,
        PORTSIDE_URL=settings.url,
        PORTSIDE_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


def setup_service(database: Database, github: GitHubSide, port: int) -> None:
    """The App installed on the repository (a real delivery), a host, a service on it."""
    delivery_id, _sent, _answered = post_delivery(
        port, "installation", github.installation_payload()
    )

    def processed() -> str | None:
        with database.session_scope() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            status = delivery.status if delivery else None
            outcome = delivery.outcome if delivery else None
        if status in ("failed", "ignored"):
            raise BenchError(f"the installation delivery was {status}: {outcome}")
        return status if status == "processed" else None

    wait_for(processed, 60, "the installation delivery to be processed", every=0.1)
    with database.session_scope() as session:
        hosts.create_host(session, "bench-1", "bench")
        catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="bench-app",
                repository=github.repository,
                branch=BRANCH,
                host="bench-1",
                port=8080,
            ),
            "bench",
        )


def benchmark(args: argparse.Namespace, work_dir: Path) -> Result:
    result = Result()
    if not args.baseline_labels:
        result.notes.append("the shell baseline built its images without Portside's label")
    suffix = secrets.token_hex(4)
    repository = f"{OWNER}/app-{suffix}"
    registry = registry_address()
    portside_repo = f"{registry}/{repository}"
    shell_repo = f"{registry}/{OWNER}/shell-{suffix}"
    redis = Redis.from_url(redis_url(), socket_connect_timeout=2, socket_timeout=10)
    redis.flushdb()
    client = docker.from_env(timeout=120)
    key = generate_private_key_pem()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the GitHub server's access log
    github_server = GitHubServer(GitHubState(work_dir / "github", APP_ID, key))
    github_server.start()
    github_server.state.add_installation(INSTALLATION, OWNER, "Organization")
    github_server.state.add_repository(INSTALLATION, repository, default_branch=BRANCH)
    github = GitHubSide(github_server, repository)
    github.commit("initial")  # GitHub lists the contents of the installed repository
    processes: list[PortsideProcess] = []
    server: Server | None = None
    try:
        with temporary_database(admin_database_url(), "portside_bench_pipe_") as database_url:
            engine: Engine = create_engine(database_url)
            migrate.upgrade(engine)
            engine.dispose()
            # The port is chosen now: the workers are told the control plane's URL.
            server = Server("portside", "controlplane.wsgi:app", {}, work_dir / "web.log")
            settings = Settings(
                database_url=database_url,
                redis_url=redis_url(),
                github_app_id=APP_ID,
                github_private_key=Secret(key),
                github_webhook_secret=Secret(WEBHOOK_SECRET),
                github_api_url=github_server.url,
                registry=registry,
                secret_key=Secret(SECRET_KEY),
                url=f"http://127.0.0.1:{server.port}",
                data_dir=work_dir / "data",
            )
            env = server_env(settings, work_dir / "data")
            database = Database(settings)
            try:
                with database.session_scope() as session:
                    _row, worker_token = tokens.create_token(
                        session, "bench-build", "worker", builds="all"
                    )
                server.env = env
                result.gunicorn = {
                    "workers": gunicorn_setting("workers", env),
                    "threads": gunicorn_setting("threads", env),
                    "cpus": os.cpu_count(),
                }
                server.start()
                control = PortsideProcess(
                    "control-worker",
                    ["worker", "--concurrency", "2"],
                    env,
                    work_dir / "control-worker.log",
                )
                processes.append(control)
                build_env = {
                    **clean_environ(),
                    "PORTSIDE_URL": settings.url,
                    "PORTSIDE_TOKEN": worker_token,
                    "PORTSIDE_REDIS_URL": settings.redis_url,
                    "PORTSIDE_REGISTRY": registry,
                    "PORTSIDE_DATA_DIR": str(work_dir / "buildworker"),
                    "PYTHONUNBUFFERED": "1",
                }
                builder = PortsideProcess(
                    "buildworker",
                    ["buildworker", "--name", f"bench-{suffix}", "--concurrency", "1"],
                    build_env,
                    work_dir / "buildworker.log",
                )
                processes.append(builder)
                control.wait_ready()
                builder.wait_ready()
                setup_service(database, github, server.port)
                shell_dir = work_dir / "shell"
                shell_dir.mkdir()
                # One untimed run of each: the first push to a new registry repository
                # uploads the base layer, the first task imports the build worker's code.
                result.warmup["shell_s"] = run_shell(
                    github, shell_dir, shell_repo, -1, args.baseline_labels
                ).total
                result.warmup["portside_s"] = run_portside(
                    github, server.port, database, -1, args.timeout
                ).total
                deadline = time.monotonic() + args.time_limit
                for index in range(args.repetitions):
                    if time.monotonic() > deadline:
                        result.notes.append(
                            f"time limit of {args.time_limit:.0f}s reached after {index} "
                            "repetitions"
                        )
                        break
                    order = ("shell", "portside") if index % 2 == 0 else ("portside", "shell")
                    for side in order:
                        if side == "shell":
                            result.shell.append(
                                run_shell(
                                    github, shell_dir, shell_repo, index, args.baseline_labels
                                )
                            )
                        else:
                            result.portside.append(
                                run_portside(github, server.port, database, index, args.timeout)
                            )
                    if not args.json:
                        print(
                            f"  repetition {index + 1}: shell {result.shell[-1].total:.2f}s, "
                            f"Portside {result.portside[-1].total:.2f}s "
                            f"(202 -> clone {result.portside[-1].to_clone_ms:.0f} ms)",
                            file=sys.stderr,
                        )
            except Exception as exc:
                result.problems.append(f"{type(exc).__name__}: {exc}")
                for process in processes:
                    result.problems.append(f"{process.name} log:\n{process.log()[-3000:]}")
                if server is not None:
                    result.problems.append(f"web log:\n{server.log_tail()}")
            finally:
                for process in reversed(processes):
                    process.stop()
                if server is not None:
                    server.stop()
                database.dispose()
    finally:
        github_server.stop()
        removed = remove_images(client, [portside_repo, shell_repo])
        deleted = delete_registry_tags(registry, [repository, f"{OWNER}/shell-{suffix}"])
        result.notes.append(
            f"clean-up: {removed} local images and {deleted} registry manifests removed "
            f"({portside_repo}, {shell_repo}; blobs stay until the registry's GC)"
        )
        client.close()
        redis.flushdb()
        redis.close()
    return result


# ------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------


def mean_phases(runs: Sequence[PortsideRun]) -> dict[str, float]:
    labels = list(runs[0].phases) if runs else []
    return {label: statistics.median(run.phases[label] for run in runs) for label in labels}


def report(result: Result, args: argparse.Namespace) -> bool:
    ok = not result.problems and bool(result.shell) and bool(result.portside)
    data: dict[str, Any] = {
        "repetitions": args.repetitions,
        "gunicorn": result.gunicorn,
        "warmup": {k: round(v, 3) for k, v in result.warmup.items()},
        "shell_s": [round(run.total, 3) for run in result.shell],
        "portside_s": [round(run.total, 3) for run in result.portside],
        "to_clone_ms": [round(run.to_clone_ms, 1) for run in result.portside],
        "post_ms": [round(run.post_ms, 1) for run in result.portside],
        "notes": result.notes,
        "problems": result.problems,
        "ok": ok,
    }
    if ok:
        data["verdict"] = result.verdict()
        data["portside_breakdown_median_s"] = {
            k: round(v, 4) for k, v in mean_phases(result.portside).items()
        }
        data["shell_breakdown_median_s"] = {
            phase: round(statistics.median(run.phases[phase] for run in result.shell), 4)
            for phase in ("fetch", "build", "push")
        }
    if args.json:
        print(json.dumps(data, indent=2))
        return ok
    print(
        f"Pipeline: {len(result.portside)} pushes through Portside vs {len(result.shell)} runs "
        f"of the shell script (interleaved, after one warm-up each); gunicorn "
        f"{result.gunicorn.get('workers')} workers x {result.gunicorn.get('threads')} threads, "
        f"{result.gunicorn.get('cpus')} CPUs"
    )
    print()
    for problem in result.problems:
        print(f"FAILED: {problem}")
    if not ok:
        print("\nthe run broke: no verdict")
        for note in result.notes:
            print(f"note: {note}")
        return ok
    verdict = data["verdict"]
    print(f"{'':<10} {'median s':>9} {'min s':>7} {'max s':>7}   runs (s)")
    for name, runs in (("shell", result.shell), ("portside", result.portside)):
        totals = [run.total for run in runs]
        listed = " ".join(f"{t:.2f}" for t in totals)
        print(
            f"{name:<10} {statistics.median(totals):>9.3f} {min(totals):>7.2f} "
            f"{max(totals):>7.2f}   {listed}"
        )
    print()
    clone = sorted(run.to_clone_ms for run in result.portside)
    print(
        f"202 -> clone step started: p50 {statistics.median(clone):.0f} ms, min {clone[0]:.0f}, "
        f"max {clone[-1]:.0f} ms; the POST itself p50 "
        f"{statistics.median(run.post_ms for run in result.portside):.0f} ms"
    )
    print()
    print("Where Portside's time goes (median seconds per push, from the rows' timestamps):")
    for label, seconds in data["portside_breakdown_median_s"].items():
        print(f"  {label:<38} {seconds * 1000:>8.0f} ms")
    print("The shell script's phases (median):")
    for label, seconds in data["shell_breakdown_median_s"].items():
        print(f"  {label:<38} {seconds * 1000:>8.0f} ms")
    print()
    for note in result.notes:
        print(f"note: {note}")
    print()
    ratio_word = "PASS" if verdict["ratio_pass"] else "FAIL"
    clone_word = "PASS" if verdict["to_clone_pass"] else "FAIL"
    print(
        f"{ratio_word} vs target: Portside/shell median end-to-end {verdict['ratio']:.3f} "
        f"({verdict['portside_median_s']:.2f} s / {verdict['shell_median_s']:.2f} s; "
        f"target <= {TARGET_RATIO})"
    )
    print(
        f"{clone_word} vs target: 202 -> clone start p50 {verdict['to_clone_p50_ms']:.0f} ms "
        f"(target < {TARGET_CLONE_START_MS:.0f} ms)"
    )
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench pipeline",
        description="Benchmark Portside's push-to-deployment pipeline against a shell script.",
    )
    parser.add_argument("--repetitions", "-k", type=int, default=5, help="timed runs of each")
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds allowed for one Portside push"
    )
    parser.add_argument(
        "--time-limit", type=float, default=600.0, help="no new repetition after this many s"
    )
    parser.add_argument(
        "--unlabelled-baseline",
        dest="baseline_labels",
        action="store_false",
        help="build the shell's images without the build-id label Portside's images carry",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep-dir", type=Path, help="keep logs here (default: temporary)")
    args = parser.parse_args(argv)
    if not 1 <= args.repetitions <= 50:
        parser.error("--repetitions must be between 1 and 50")
    return args


@contextlib.contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="portside-bench-pipeline-") as temp:
        yield Path(temp)


def figures(result: Result) -> list[Figure]:
    """The pipeline's two figures for the final table."""
    ratio_name = "pipeline: Portside/shell median push -> deployment"
    clone_name = "pipeline: 202 -> clone start p50"
    ratio_target, clone_target = f"<= {TARGET_RATIO}", f"< {TARGET_CLONE_START_MS:.0f} ms"
    if result.problems or not result.shell or not result.portside:
        return [broken(ratio_name, ratio_target), broken(clone_name, clone_target)]
    verdict = result.verdict()
    return [
        Figure(
            ratio_name,
            f"{verdict['ratio']:.3f} ({verdict['portside_median_s']:.2f} s / "
            f"{verdict['shell_median_s']:.2f} s)",
            ratio_target,
            verdict["ratio_pass"],
        ),
        Figure(
            clone_name,
            f"{verdict['to_clone_p50_ms']:.0f} ms",
            clone_target,
            verdict["to_clone_pass"],
        ),
    ]


def run(argv: Sequence[str] | None = None) -> tuple[int, list[Figure]]:
    """Run, print the report; return the exit status and the figures for the final table."""
    args = parse_args(argv)
    if not os.environ.get("DOCKER_HOST"):
        print('DOCKER_HOST is not set: eval "$(scripts/test-env.sh env)" first', file=sys.stderr)
        return 1, figures(Result(problems=["DOCKER_HOST is not set"]))
    with work_directory(args.keep_dir) as work_dir:
        result = benchmark(args, work_dir)
        ok = report(result, args)
    return (0 if ok else 1), figures(result)


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
