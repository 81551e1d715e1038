"""``portside dev``: the whole of Portside on one machine, for trying it out.

It runs web, control worker, beat and (when a Docker engine answers) a build worker and an
agent for host ``local`` as child processes, and stops them all on Ctrl-C. One instance
per data directory and per Redis database: two would take each other's tasks and
overwrite each other's keys, so a second one refuses with one line instead. While it
runs, ``<data dir>/dev.json`` tells the ``portside`` command of the same checkout where the
API is and which admin token to use, so a newcomer's next command needs no settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from contracts.environ import mask_url
from controlplane.errors import PortsideError
from controlplane.statuses import BuildLane, TokenScope

if TYPE_CHECKING:
    from controlplane.db import Database
    from controlplane.settings import Settings

DEV_HOST = "local"
DEFAULT_BIND = "127.0.0.1:8000"
BIND_SETTING = "PORTSIDE_DEV_BIND"
CONNECTION_FILE = "dev.json"
LOCK_FILE = "dev.lock"
REDIS_OWNER_KEY = "portside:dev:owner"
REDIS_CLAIM_SECONDS = 30


class DevRefused(PortsideError):
    """``portside dev`` cannot start here; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class DevConnection:
    """Where a running ``portside dev`` answers, and the admin token it made for its user."""

    url: str
    token: str


def bind_address(environ: Mapping[str, str], given: str | None) -> str:
    return given or (environ.get(BIND_SETTING) or "").strip() or DEFAULT_BIND


def connection(data_dir: Path) -> DevConnection | None:
    """The running ``portside dev`` of ``data_dir``, or None when none runs there."""
    try:
        with (data_dir / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None  # nobody holds it: no instance runs
    except BlockingIOError:
        pass
    except OSError:
        return None
    try:
        saved = json.loads((data_dir / CONNECTION_FILE).read_text())
        return DevConnection(url=str(saved["url"]), token=str(saved["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _claim_data_dir(data_dir: Path) -> IO[str]:
    """Hold the data directory's lock for as long as this process lives."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / LOCK_FILE).open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DevRefused(
            f"another `portside dev` runs on {data_dir}; give this one its own PORTSIDE_DATA_DIR"
        ) from None
    return lock


def _check_bind_free(bind: str) -> None:
    host, _, port = bind.rpartition(":")
    try:
        number = int(port)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host.strip("[]"), number))
    except ValueError:
        raise DevRefused(f"{BIND_SETTING} must be ADDRESS:PORT, got {bind!r}") from None
    except OSError as exc:
        raise DevRefused(
            f"{bind} is taken ({exc.strerror}); choose another address, e.g. "
            f"{BIND_SETTING}={host or '127.0.0.1'}:{number + 1}"
        ) from None


class RedisClaim:
    """This instance's claim on its Redis database, renewed while it runs."""

    def __init__(self, redis_url: str, owner: str) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.owner = owner
        self.where = mask_url(redis_url)

    def take(self) -> None:
        claimed = self.client.set(REDIS_OWNER_KEY, self.owner, nx=True, ex=REDIS_CLAIM_SECONDS)
        held_by = self._holder()
        if not claimed and held_by is not None and held_by != self.owner:
            raise DevRefused(
                f"Redis {self.where} is used by another `portside dev` ({held_by}); "
                "give this one its own database, e.g. PORTSIDE_REDIS_URL=redis://127.0.0.1:6379/1"
            )
        self.client.set(REDIS_OWNER_KEY, self.owner, ex=REDIS_CLAIM_SECONDS)

    def renew(self) -> None:
        """Keep the claim alive; a Redis hiccup is the workers' problem to report, not ours."""
        import redis

        with contextlib.suppress(redis.RedisError):
            self.take()

    def _holder(self) -> str | None:
        held_by = self.client.get(REDIS_OWNER_KEY)
        return held_by.decode(errors="replace") if isinstance(held_by, bytes) else held_by

    def release(self) -> None:
        if self._holder() == self.owner:
            self.client.delete(REDIS_OWNER_KEY)
        self.client.close()


def kept_secret(path: Path, still_good: Callable[[str], bool], make: Callable[[], str]) -> str:
    """A secret ``portside dev`` keeps (0600) beside its data and reuses while it is still
    good, so restarts neither change keys nor pile up tokens."""
    if path.exists():
        kept = path.read_text().strip()
        if kept and still_good(kept):
            return kept
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(value)
    return value


def _kept_token(session: Any, path: Path, scope: str, make: Callable[[], str]) -> str:
    from controlplane.services import tokens

    def still_good(kept: str) -> bool:
        token = tokens.authenticate(session, kept)
        return token is not None and token.scope == scope

    return kept_secret(path, still_good, make)


def worker_token(session: Any, data_dir: Path) -> str:
    """The dev build worker's token, reused while it authenticates."""
    from controlplane.services import tokens

    return _kept_token(
        session,
        data_dir / "dev-worker.token",
        "worker",
        lambda: tokens.create_token(
            session, "dev-buildworker", TokenScope.WORKER, builds=BuildLane.ALL
        )[1],
    )


def _agent_token(session: Any, data_dir: Path) -> str:
    from controlplane.services import hosts

    return _kept_token(
        session, data_dir / "dev-agent.token", "host", lambda: hosts.agent_token(session, DEV_HOST)
    )


def _admin_token(session: Any, data_dir: Path) -> str:
    """The token printed for the person trying Portside out (admin, as it is their machine)."""
    from controlplane.services import tokens

    return _kept_token(
        session,
        data_dir / "dev-admin.token",
        "admin",
        lambda: tokens.create_token(session, "dev-admin", "admin", actor="dev")[1],
    )


def _write_connection(data_dir: Path, found: DevConnection) -> None:
    path = data_dir / CONNECTION_FILE
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(dataclasses.asdict(found)))


def run(settings: Settings, database: Database, bind: str) -> int:
    """Start everything, print where to go next, supervise until Ctrl-C or a child dies."""
    from controlplane import migrate
    from tasks.process import docker_engine_answers

    data_dir = settings.data_dir
    lock = _claim_data_dir(data_dir)
    _check_bind_free(bind)
    claim = RedisClaim(settings.redis_url, f"{socket.gethostname()}:{data_dir}")
    claim.take()
    try:
        migrate.upgrade(database.engine)
        url = f"http://{bind}"
        env = dict(os.environ, PORTSIDE_URL=url, PORTSIDE_DATA_DIR=str(data_dir))
        # One build worker for everything: a fork's builds too, unless told otherwise.
        env.setdefault("PORTSIDE_BUILD_UNTRUSTED", "yes")
        # Local paths as git remotes are how one tries Portside without GitHub.
        env.setdefault("PORTSIDE_ALLOW_LOCAL_GIT", "1")
        if not settings.secret_key:
            # Snapshots carry decrypted secrets: a dev key of its own, kept beside the data.
            env["PORTSIDE_SECRET_KEY"] = kept_secret(
                data_dir / "dev-secret.key", bool, lambda: secrets.token_urlsafe(32)
            )
        agent_env = dict(
            env, PORTSIDE_AGENT_PUBLISH_HOST=settings.agent_publish_host or "127.0.0.1"
        )
        with database.session_scope() as session:
            if not settings.token:
                env["PORTSIDE_TOKEN"] = worker_token(session, data_dir)
            agent_env["PORTSIDE_TOKEN"] = _agent_token(session, data_dir)
            admin = _admin_token(session, data_dir)
        _write_connection(data_dir, DevConnection(url=url, token=admin))
        docker_answers = docker_engine_answers()
        children = _children(bind, with_docker=docker_answers)
        processes = {
            name: subprocess.Popen(command, env=agent_env if name == "agent" else env)
            for name, command in children.items()
        }
        _greet(url, admin, data_dir, docker_answers)
        return _supervise(processes, claim)
    finally:
        (data_dir / CONNECTION_FILE).unlink(missing_ok=True)
        claim.release()
        lock.close()


def _children(bind: str, *, with_docker: bool) -> dict[str, list[str]]:
    portside = [sys.executable, "-m", "controlplane.cli"]
    children = {
        "web": [*portside, "web", "--bind", bind],
        "worker": [*portside, "worker", "--concurrency", "2"],
        "beat": [*portside, "beat"],
    }
    if with_docker:
        children["buildworker"] = [*portside, "buildworker", "--name", "build-dev"]
        children["agent"] = [*portside, "agent"]
    return children


def _greet(url: str, admin: str, data_dir: Path, docker_answers: bool) -> None:
    print(f"portside dev: dashboard {url}/ (log in with the token below); data in {data_dir}")
    print(f"portside dev: admin token {admin}")
    print("portside dev: the `portside` command of this checkout uses both while this runs")
    if docker_answers:
        print(
            f"portside dev: the agent runs host {DEV_HOST!r}. Next: `make demo`, or "
            "`portside services create hello --git <repository> --port 8080` then "
            "`portside deploy hello`"
        )
    else:
        print(
            "portside dev: no Docker engine answers (DOCKER_HOST), so no build worker and "
            "no agent run; building and deploying need one",
            file=sys.stderr,
        )
    print("portside dev: Ctrl-C stops everything")


def _supervise(processes: dict[str, subprocess.Popen[bytes]], claim: RedisClaim) -> int:
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exit_code = 0
    renew_at = time.monotonic() + REDIS_CLAIM_SECONDS / 3
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                print(f"portside dev: {name} exited with {process.returncode}", file=sys.stderr)
                exit_code, stopping = 1, True
        if time.monotonic() >= renew_at:
            claim.renew()
            renew_at = time.monotonic() + REDIS_CLAIM_SECONDS / 3
        time.sleep(0.5)
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    for process in processes.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    return exit_code
