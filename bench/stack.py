"""Portside as it runs for real, for the benchmarks that need all of it at once.

A PostgreSQL database of its own, the benchmarks' Redis database, the test GitHub server
(``tests.githubserver``) in a thread with the App installed on the repositories made
here, gunicorn serving ``controlplane.wsgi:app``, and ``portside worker`` /
``portside buildworker`` processes on demand. Everything is taken down on the way out,
even when the benchmark breaks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from sqlalchemy import create_engine

from bench.common import Server, redis_url, session_pids, temporary_database
from bench.pipeline import (
    APP_ID,
    BRANCH,
    INSTALLATION,
    OWNER,
    SECRET_KEY,
    WEBHOOK_SECRET,
    BenchError,
    GitHubSide,
    PortsideProcess,
    clean_environ,
    post_delivery,
    registry_address,
    server_env,
    wait_for,
)
from bench.webhooks import PAYLOADS, admin_database_url
from controlplane import migrate
from controlplane.db import Database
from controlplane.models import WebhookDelivery
from controlplane.services import catalog, hosts, servicerules, tokens
from controlplane.settings import Secret, Settings
from tests.githubserver.server import GitHubServer, GitHubState, generate_private_key_pem


@dataclass
class Stack:
    work_dir: Path
    github: GitHubServer
    settings: Settings
    env: dict[str, str]
    database: Database
    server: Server
    worker_token: str
    redis: Redis
    processes: list[PortsideProcess] = field(default_factory=list)

    def repository(self, name: str) -> GitHubSide:
        """A repository of the installation, with a first commit on ``main``."""
        full_name = f"{OWNER}/{name}"
        self.github.state.add_repository(INSTALLATION, full_name, default_branch=BRANCH)
        side = GitHubSide(self.github, full_name)
        side.commit("initial")
        return side

    def install(self, repositories: Sequence[GitHubSide]) -> None:
        """A real ``installation`` delivery naming ``repositories``; wait until processed."""
        payload: dict[str, Any] = json.loads(
            (PAYLOADS / "installation__created.payload.json").read_bytes()
        )
        payload["installation"]["id"] = INSTALLATION
        payload["repositories"] = [
            {
                "id": self.github.state.repository(side.repository).id,
                "name": side.repository.split("/")[1],
                "full_name": side.repository,
                "private": True,
            }
            for side in repositories
        ]
        delivery_id, _sent, _answered = post_delivery(self.server.port, "installation", payload)

        def processed() -> bool:
            with self.database.session_scope() as session:
                delivery = session.get(WebhookDelivery, delivery_id)
                status = delivery.status if delivery else None
                outcome = delivery.outcome if delivery else None
            if status in ("failed", "ignored"):
                raise BenchError(f"the installation delivery was {status}: {outcome}")
            return status == "processed"

        wait_for(processed, 60, "the installation delivery to be processed", every=0.1)

    def host(self, name: str) -> None:
        with self.database.session_scope() as session:
            hosts.create_host(session, name, "bench")

    def service(self, name: str, repository: GitHubSide, host: str) -> int:
        """A service tracking ``main`` of ``repository`` on ``host``; return its id."""
        with self.database.session_scope() as session:
            service = catalog.create_service(
                session,
                servicerules.ServiceSpec(
                    name=name, repository=repository.repository, branch=BRANCH, host=host, port=8080
                ),
                "bench",
            )
            return service.id

    def control_worker(self, concurrency: int = 2) -> PortsideProcess:
        """``portside worker`` (the control queue), as ``portside dev`` starts it."""
        process = PortsideProcess(
            "control-worker",
            ["worker", "--concurrency", str(concurrency)],
            self.env,
            self.work_dir / "control-worker.log",
        )
        self.processes.append(process)
        process.wait_ready()
        return process

    def build_worker(self, name: str) -> PortsideProcess:
        """``portside buildworker``: no database, only the control plane's URL and a token."""
        env = {
            **clean_environ(),
            "PORTSIDE_URL": self.settings.url,
            "PORTSIDE_TOKEN": self.worker_token,
            "PORTSIDE_REDIS_URL": self.settings.redis_url,
            "PORTSIDE_REGISTRY": self.settings.registry,
            "PORTSIDE_DATA_DIR": str(self.work_dir / f"buildworker-{name}"),
            "PYTHONUNBUFFERED": "1",
        }
        process = PortsideProcess(
            f"buildworker {name}",
            ["buildworker", "--name", name, "--concurrency", "1"],
            env,
            self.work_dir / f"buildworker-{name}.log",
        )
        self.processes.append(process)
        process.wait_ready()
        return process

    def pids(self, process: PortsideProcess) -> list[int]:
        return session_pids(process.process.pid)

    def log_tails(self) -> list[str]:
        tails = [f"{process.name} log:\n{process.log()[-3000:]}" for process in self.processes]
        return [*tails, f"web log:\n{self.server.log_tail()}"]


@contextlib.contextmanager
def portside_stack(work_dir: Path, prefix: str) -> Iterator[Stack]:
    """Everything up but the workers (see :meth:`Stack.control_worker`); all down after."""
    redis = Redis.from_url(redis_url(), socket_connect_timeout=2, socket_timeout=10)
    redis.flushdb()
    key = generate_private_key_pem()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the GitHub server's access log
    github = GitHubServer(GitHubState(work_dir / "github", APP_ID, key))
    github.start()
    github.state.add_installation(INSTALLATION, OWNER, "Organization")
    try:
        with temporary_database(admin_database_url(), prefix) as database_url:
            engine = create_engine(database_url)
            migrate.upgrade(engine)
            engine.dispose()
            server = Server("portside", "controlplane.wsgi:app", {}, work_dir / "web.log")
            settings = Settings(
                database_url=database_url,
                redis_url=redis_url(),
                github_app_id=APP_ID,
                github_private_key=Secret(key),
                github_webhook_secret=Secret(WEBHOOK_SECRET),
                github_api_url=github.url,
                registry=registry_address(),
                secret_key=Secret(SECRET_KEY),
                url=f"http://127.0.0.1:{server.port}",
                data_dir=work_dir / "data",
            )
            server.env = server_env(settings, work_dir / "data")
            database = Database(settings)
            with database.session_scope() as session:
                _row, worker_token = tokens.create_token(
                    session, f"bench-build-{secrets.token_hex(2)}", "worker", builds="all"
                )
            stack = Stack(
                work_dir, github, settings, server.env, database, server, worker_token, redis
            )
            try:
                server.start()
                yield stack
            finally:
                for process in reversed(stack.processes):
                    process.stop()
                server.stop()
                database.dispose()
    finally:
        github.stop()
        redis.flushdb()
        redis.close()
