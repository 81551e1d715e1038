"""The ``portside`` command: process entry points and admin commands.

Settings are read once here and handed down. Every failure a person can fix (a bad
setting, a database or Redis that does not answer) ends in one line on stderr and a
non-zero exit code: 2 for bad usage or settings, 1 for an unavailable dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from controlplane import migrate
from controlplane.db import Database
from controlplane.errors import ApiError, ConfigError, PortsideError
from controlplane.services import desired, hosts, services, tokens
from controlplane.settings import Settings, mask_url

EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2
DEV_HOST = "local"
DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"


class CommandError(Exception):
    """A failure to report as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code


def _database(settings: Settings) -> Database:
    database, _redis = desired.open_database(settings)
    try:
        database.ping()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise CommandError(
            f"the database at {mask_url(settings.database_url)} is unavailable: {reason}"
        ) from None
    return database


def _check_redis(settings: Settings) -> None:
    try:
        Redis.from_url(settings.redis_url, socket_connect_timeout=2).ping()
    except RedisError as exc:
        raise CommandError(
            f"Redis at {mask_url(settings.redis_url)} is unavailable: {exc}"
        ) from None


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    database = _database(settings)
    migrate.upgrade(database.engine, args.revision)
    print(f"database at {mask_url(settings.database_url)} is at revision {args.revision}")
    return 0


def cmd_db_downgrade(settings: Settings, args: argparse.Namespace) -> int:
    database = _database(settings)
    migrate.downgrade(database.engine, args.revision)
    print(f"database at {mask_url(settings.database_url)} is at revision {args.revision}")
    return 0


def _admin(settings: Settings, action: Callable[[Any], Any]) -> Any:
    database = _database(settings)
    with database.session_scope() as session:
        return action(session)


def _emit(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    widths = [max([len(c)] + [len(str(r.get(c) or "")) for r in rows]) for c in columns]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print(
            "  ".join(str(row.get(c) or "").ljust(w) for c, w in zip(columns, widths, strict=True))
        )


def cmd_tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    def action(session: Any) -> str:
        token, secret = tokens.create_token(session, args.name, args.scope)
        print(f"created {token.scope} token {token.id} named {token.name!r}; it is shown once:")
        return secret

    print(_admin(settings, action))
    return 0


def cmd_tokens_list(settings: Settings, args: argparse.Namespace) -> int:
    def action(session: Any) -> list[dict[str, Any]]:
        return [
            {
                "id": t.id,
                "name": t.name,
                "scope": t.scope,
                "created_at": t.created_at.isoformat(timespec="seconds"),
                "revoked_at": t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "",
            }
            for t in tokens.list_tokens(session)
        ]

    _emit(_admin(settings, action), ("id", "name", "scope", "created_at", "revoked_at"), args.json)
    return 0


def cmd_tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    _admin(settings, lambda session: tokens.revoke_token(session, args.id))
    print(f"token {args.id} revoked")
    return 0


def cmd_hosts_create(settings: Settings, args: argparse.Namespace) -> int:
    def action(session: Any) -> str:
        host, secret = hosts.create_host(session, args.name, "cli", args.previews)
        print(f"created host {host.name} (id {host.id}); its agent token is shown once:")
        return secret

    print(_admin(settings, action))
    return 0


def cmd_hosts_list(settings: Settings, args: argparse.Namespace) -> int:
    def action(session: Any) -> list[dict[str, Any]]:
        return [
            {
                "id": h.id,
                "name": h.name,
                "generation": h.generation,
                "last_seen_at": h.last_seen_at.isoformat(timespec="seconds")
                if h.last_seen_at
                else "never",
                "agent_version": h.agent_version,
            }
            for h in hosts.list_hosts(session)
        ]

    columns = ("id", "name", "generation", "last_seen_at", "agent_version")
    _emit(_admin(settings, action), columns, args.json)
    return 0


def cmd_services_create(settings: Settings, args: argparse.Namespace) -> int:
    spec = services.ServiceSpec(
        name=args.name,
        repository=args.repository,
        branch=args.branch,
        host=args.host,
        compose_path=args.compose_path,
        port=args.port,
        domain=args.domain,
        watch_paths=args.watch_path or [],
    )

    def action(session: Any) -> str:
        service = services.create_service(session, spec, "cli")
        return f"created service {service.name} (id {service.id})"

    print(_admin(settings, action))
    return 0


def cmd_services_list(settings: Settings, args: argparse.Namespace) -> int:
    def action(session: Any) -> list[dict[str, Any]]:
        return [
            {
                "id": s.id,
                "name": s.name,
                "repository": s.repository_full_name,
                "branch": s.branch,
                "host": s.host.name,
                "domain": s.domain,
            }
            for s in services.list_services(session)
        ]

    columns = ("id", "name", "repository", "branch", "host", "domain")
    _emit(_admin(settings, action), columns, args.json)
    return 0


def _celery(settings: Settings, argv: list[str]) -> int:
    _check_redis(settings)
    from tasks import worker

    worker.run(settings, argv)
    return 0


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    _database(settings)
    command = [sys.executable, "-m", "gunicorn", "-c", str(DEPLOY_DIR / "gunicorn.conf.py")]
    if args.bind:
        command += ["--bind", args.bind]
    command.append("controlplane.wsgi:app")
    os.execv(sys.executable, command)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    _database(settings)
    argv = ["worker", "-Q", "control", "-n", "control@%h", "-E", "-l", args.loglevel]
    argv += ["-c", str(args.concurrency)] if args.concurrency else []
    return _celery(settings, argv)


def cmd_buildworker(settings: Settings, args: argparse.Namespace) -> int:
    from tasks import worker

    name = args.name or f"build-{os.uname().nodename}-{os.getpid()}"
    queues = ",".join(worker.build_queues(name))
    argv = ["worker", "-Q", queues, "-n", f"{name}@%h", "-E", "-l", args.loglevel]
    argv += ["-c", str(args.concurrency or 2)]
    return _celery(settings, argv)


def cmd_beat(settings: Settings, args: argparse.Namespace) -> int:
    schedule = settings.data_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    return _celery(settings, ["beat", "-l", args.loglevel, "-s", str(schedule)])


def cmd_flower(settings: Settings, args: argparse.Namespace) -> int:
    return _celery(settings, ["flower", f"--address={args.address}", f"--port={args.port}"])


def cmd_agent(settings: Settings, args: argparse.Namespace) -> int:
    """The host agent is a package of its own (no Flask or database): exec it."""
    os.execv(sys.executable, [sys.executable, "-m", "hostagent"])


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    """Everything on one machine: migrate, then web, workers, beat and an agent."""
    _check_redis(settings)
    database = _database(settings)
    migrate.upgrade(database.engine)
    env = dict(os.environ, PORTSIDE_URL=f"http://{args.bind}")
    agent_env = dict(env, PORTSIDE_AGENT_PUBLISH_HOST=settings.agent_publish_host or "127.0.0.1")
    # The build worker and the agent talk to the web process like any other: with tokens.
    with database.session_scope() as session:
        if not settings.token:
            _token, env["PORTSIDE_TOKEN"] = tokens.create_token(
                session, "dev-buildworker", "worker"
            )
        agent_env["PORTSIDE_TOKEN"] = hosts.agent_token(session, DEV_HOST)
    portside = [sys.executable, "-m", "controlplane.cli"]
    children = {
        "web": [*portside, "web", "--bind", args.bind],
        "worker": [*portside, "worker", "--concurrency", "2"],
        "buildworker": [*portside, "buildworker", "--name", "build-dev"],
        "beat": [*portside, "beat"],
    }
    processes = {name: subprocess.Popen(command, env=env) for name, command in children.items()}
    print(f"portside dev: web on http://{args.bind}, workers and beat started; Ctrl-C stops")
    print(f"portside dev: the agent runs host {DEV_HOST!r}; create services on it")
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exit_code = 0
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                print(f"portside dev: {name} exited with {process.returncode}", file=sys.stderr)
                exit_code, stopping = 1, True
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portside", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[..., int], help_text: str, parent: Any = commands) -> Any:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    web = add("web", cmd_web, "serve the control plane with gunicorn")
    web.add_argument("--bind", help="address:port (default from deploy/gunicorn.conf.py)")
    for name, handler, text in (
        ("worker", cmd_worker, "run a control worker (queue 'control')"),
        ("buildworker", cmd_buildworker, "run a build worker (queue 'builds' + its own)"),
        ("beat", cmd_beat, "run the periodic scheduler"),
    ):
        sub = add(name, handler, text)
        sub.add_argument("--loglevel", default="INFO")
        sub.add_argument("--concurrency", type=int)
        if name == "buildworker":
            sub.add_argument("--name", help="the node name; its direct queue is builds.<name>")
    flower = add("flower", cmd_flower, "run Flower on the same broker")
    flower.add_argument("--address", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)
    add("agent", cmd_agent, "run the host agent")
    dev = add("dev", cmd_dev, "run everything on one machine (SQLite + local Redis)")
    dev.add_argument("--bind", default="127.0.0.1:8000")

    db = add("db", lambda *_: 0, "database migrations")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = add("upgrade", cmd_db_upgrade, "apply migrations", db_commands)
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = add("downgrade", cmd_db_downgrade, "revert migrations", db_commands)
    downgrade.add_argument("revision", nargs="?", default="base")

    token_parser = add("tokens", lambda *_: 0, "API tokens")
    token_commands = token_parser.add_subparsers(dest="tokens_command", required=True)
    create = add("create", cmd_tokens_create, "create a token, printed once", token_commands)
    create.add_argument("--name", required=True)
    create.add_argument("--scope", required=True, choices=("admin", "worker", "read"))
    listing = add("list", cmd_tokens_list, "list tokens", token_commands)
    listing.add_argument("--json", action="store_true")
    revoke = add("revoke", cmd_tokens_revoke, "revoke a token", token_commands)
    revoke.add_argument("id", type=int)

    host_parser = add("hosts", lambda *_: 0, "agent hosts")
    host_commands = host_parser.add_subparsers(dest="hosts_command", required=True)
    host_create = add(
        "create", cmd_hosts_create, "create a host and its agent token", host_commands
    )
    host_create.add_argument("name")
    host_create.add_argument("--previews", action="store_true", help="accepts preview environments")
    host_list = add("list", cmd_hosts_list, "list hosts", host_commands)
    host_list.add_argument("--json", action="store_true")

    service_parser = add("services", lambda *_: 0, "services")
    service_commands = service_parser.add_subparsers(dest="services_command", required=True)
    service_create = add("create", cmd_services_create, "create a service", service_commands)
    service_create.add_argument("name")
    service_create.add_argument("--repository", required=True, help="owner/name")
    service_create.add_argument("--branch", default="main")
    service_create.add_argument("--host", required=True)
    service_create.add_argument("--compose-path")
    service_create.add_argument("--port", type=int)
    service_create.add_argument("--domain")
    service_create.add_argument("--watch-path", action="append", help="a glob; repeatable")
    service_list = add("list", cmd_services_list, "list services", service_commands)
    service_list.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        result: int = args.handler(settings, args)
        return result
    except ConfigError as exc:
        print(f"portside: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"portside: {exc}", file=sys.stderr)
        return exc.code
    except ApiError as exc:
        details = f" ({json.dumps(exc.details)})" if exc.details else ""
        print(f"portside: {exc.message}{details}", file=sys.stderr)
        return EXIT_USAGE
    except PortsideError as exc:
        print(f"portside: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
