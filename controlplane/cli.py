"""The ``portside`` command: process entry points, admin commands and an API client.

Settings are read once here and handed down. Every failure a person can fix (a bad
setting, a database or Redis that does not answer) ends in one line on stderr and a
non-zero exit code: 2 for bad usage or settings, 1 for an unavailable dependency.

Admin commands (``tokens``, ``hosts``, ``db``) work on the database directly. The
commands of everyday use (``services``, ``vars``, ``builds``, ``logs``, ``redeploy``,
``previews``, ``environments``) talk to a running control plane over HTTP at
``PORTSIDE_URL`` with ``PORTSIDE_TOKEN``; their HTTP calls live in
:mod:`controlplane.client`.

A command imports what it needs when it runs, so ``portside --help`` and the API commands
start without SQLAlchemy, Alembic, Flask, docker or Celery; ``portside agent`` and
``portside buildworker`` exec their own packages, which import no control plane.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from controlplane.statuses import BUILD_LANES, BUILD_STATUSES

if TYPE_CHECKING:
    from controlplane.client import PortsideClient
    from controlplane.db import Database
    from controlplane.errors import PortsideError
    from controlplane.settings import Settings

EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"


class CommandError(Exception):
    """A failure to report as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code


def _database(settings: Settings, *, migrated: bool = True) -> Database:
    """The database, answering and (unless ``migrated`` is False, for the commands that
    migrate it) at the schema this code needs: one line naming the fix otherwise."""
    from sqlalchemy.exc import SQLAlchemyError

    from controlplane import migrate
    from controlplane.composition import open_database
    from controlplane.settings import mask_url

    database, _redis = open_database(settings)
    where = f"the database at {mask_url(settings.database_url)}"
    try:
        database.ping()
        problem = migrate.behind(database.engine) if migrated else None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise CommandError(f"{where} is unavailable: {reason}") from None
    if problem:
        raise CommandError(f"{where} {problem}: run `portside db upgrade`")
    return database


def _check_redis(settings: Settings) -> None:
    from tasks.process import broker_refusal

    if problem := broker_refusal(settings.redis_url):
        raise CommandError(problem)


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    from controlplane import migrate
    from controlplane.settings import mask_url

    database = _database(settings, migrated=False)
    migrate.upgrade(database.engine, args.revision)
    print(f"database at {mask_url(settings.database_url)} is at revision {args.revision}")
    return 0


def cmd_db_downgrade(settings: Settings, args: argparse.Namespace) -> int:
    from controlplane import migrate
    from controlplane.settings import mask_url

    database = _database(settings, migrated=False)
    migrate.downgrade(database.engine, args.revision)
    print(f"database at {mask_url(settings.database_url)} is at revision {args.revision}")
    return 0


def cmd_secrets_rotate_key(settings: Settings, args: argparse.Namespace) -> int:
    """Re-encrypt every stored secret with PORTSIDE_SECRET_KEY (old keys from
    PORTSIDE_SECRET_KEY_OLD); afterwards PORTSIDE_SECRET_KEY_OLD can be removed."""
    from controlplane.crypto import SecretBox
    from controlplane.services import secrets

    box = SecretBox.from_settings(settings)
    counts = _admin(settings, lambda session: secrets.rotate_key(session, box, "cli"))
    print(", ".join(f"{count} {name}" for name, count in counts.items()) + " re-encrypted")
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
    from controlplane.services import tokens

    def action(session: Any) -> str:
        token, secret = tokens.create_token(
            session, args.name, args.scope, actor="cli", builds=args.builds
        )
        lane = f" for {token.build_lane} builds" if token.scope == "worker" else ""
        print(
            f"created {token.scope} token {token.id}{lane} named {token.name!r}; it is shown once:"
        )
        return secret

    print(_admin(settings, action))
    return 0


def cmd_tokens_list(settings: Settings, args: argparse.Namespace) -> int:
    from controlplane.services import tokens

    def action(session: Any) -> list[dict[str, Any]]:
        return [
            {
                "id": t.id,
                "name": t.name,
                "scope": t.scope,
                "builds": t.build_lane if t.scope == "worker" else "",
                "created_at": t.created_at.isoformat(timespec="seconds"),
                "revoked_at": t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "",
            }
            for t in tokens.list_tokens(session)
        ]

    columns = ("id", "name", "scope", "builds", "created_at", "revoked_at")
    _emit(_admin(settings, action), columns, args.json)
    return 0


def cmd_tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from controlplane.services import tokens

    _admin(settings, lambda session: tokens.revoke_token(session, args.id, "cli"))
    print(f"token {args.id} revoked")
    return 0


def cmd_github_sync(settings: Settings, args: argparse.Namespace) -> int:
    """Catch up installations (and their repositories) whose webhooks were missed."""
    from controlplane.services import appsetup, installations

    database = _database(settings)
    github = appsetup.AppSource(settings, database).app()
    if github is None:
        raise CommandError(
            "no GitHub App is configured: set PORTSIDE_GITHUB_APP_ID and "
            "PORTSIDE_GITHUB_PRIVATE_KEY, or register one on the dashboard's setup page"
        )
    for installation_id, what in installations.sync(database, github).items():
        print(f"installation {installation_id}: {what}")
    return 0


def cmd_hosts_create(settings: Settings, args: argparse.Namespace) -> int:
    from controlplane.services import hosts

    def action(session: Any) -> str:
        host, secret = hosts.create_host(
            session, args.name, "cli", args.previews, untrusted=args.untrusted
        )
        kind = "untrusted host" if host.untrusted else "host"
        print(f"created {kind} {host.name} (id {host.id}); its agent token is shown once:")
        return secret

    print(_admin(settings, action))
    return 0


def cmd_hosts_list(settings: Settings, args: argparse.Namespace) -> int:
    from controlplane.services import hosts

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
                "untrusted": "yes" if h.untrusted else "",
            }
            for h in hosts.list_hosts(session)
        ]

    columns = ("id", "name", "generation", "last_seen_at", "agent_version", "untrusted")
    _emit(_admin(settings, action), columns, args.json)
    return 0


def _service_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``POST /v1/services`` from ``services create``'s arguments, for both
    ways it goes (the API, or the database through the same spec)."""
    hosts = args.host or []
    scale = {"hosts": hosts} if len(hosts) > 1 else {}
    if args.replicas is not None:
        scale["replicas"] = args.replicas
    return {
        **scale,
        "name": args.name,
        "repository": args.repository,
        "git_url": args.git,
        "git_token": _read_secret_file(args.git_token_file),
        "git_ssh_key": _read_secret_file(args.git_ssh_key_file),
        "poll_interval": args.poll_interval,
        "branch": args.branch,
        "host": hosts[0] if hosts else "",
        "compose_path": args.compose_path,
        "port": args.port,
        "domain": args.domain,
        "watch_paths": args.watch_path or [],
    }


def _read_secret_file(path: str | None) -> str | None:
    """A credential from a file (``-``: standard input), never from the command line."""
    if path is None:
        return None
    return (sys.stdin.read() if path == "-" else Path(path).read_text()).strip()


def cmd_services_create(settings: Settings, args: argparse.Namespace) -> int:
    if uses_api(os.environ):
        return api_services_create(settings, args)
    from controlplane.crypto import SecretBox
    from controlplane.services import scaling, services

    fields, scale = scaling.split(_service_fields(args))
    spec = services.spec_from(fields)
    box = SecretBox.from_settings(settings) if settings.secret_key else None

    def action(session: Any) -> str:
        service = services.create_service(
            session, spec, "cli", box=box, allow_local_git=settings.allow_local_git
        )
        if scale:
            service = scaling.scale(session, service.id, "cli", **scale)
        return f"created service {service.name} (id {service.id})"

    print(_admin(settings, action))
    return 0


def cmd_services_list(settings: Settings, args: argparse.Namespace) -> int:
    if uses_api(os.environ):
        return api_services_list(settings, args)
    from controlplane.services import services

    def action(session: Any) -> list[dict[str, Any]]:
        return [
            {
                "id": s.id,
                "name": s.name,
                "repository": s.git_url or s.repository_full_name,
                "branch": s.branch,
                "host": s.host.name,
                "domain": s.domain,
            }
            for s in services.list_services(session)
        ]

    _emit(_admin(settings, action), SERVICE_COLUMNS, args.json)
    return 0


# -- commands over the API ------------------------------------------------------------------

SERVICE_COLUMNS = ("id", "name", "repository", "branch", "host", "domain")
ENVIRONMENT_COLUMNS = ("id", "name", "kind", "service", "host", "status", "deployment", "address")
PREVIEW_COLUMNS = ("id", "name", "service", "pr", "branch", "status", "deployment", "address")
BUILD_COLUMNS = ("id", "service", "branch", "commit", "status", "author", "message", "created")
VARIABLE_COLUMNS = ("name", "kind", "scope", "secret", "value", "updated_at")
STEP_COLUMNS = ("name", "status", "attempts", "error")
IMAGE_COLUMNS = ("service", "reference", "tag")
HIDDEN = "***"
QUIET_AFTER = 10.0
STEP_VERBS = {
    "clone": "cloning",
    "build": "building",
    "push": "pushing",
    "upload_compose": "uploading the compose file",
    "record_deployment": "deploying",
}


def uses_api(environ: Mapping[str, str]) -> bool:
    """``services create|list`` go through the API when it is configured, else the DB."""
    return any((environ.get(name) or "").strip() for name in ("PORTSIDE_URL", "PORTSIDE_TOKEN"))


def _client(settings: Settings) -> PortsideClient:
    from controlplane.client import PortsideClient

    if not settings.token:
        raise CommandError(
            f"PORTSIDE_TOKEN is not set: the API at {settings.url} needs a token "
            "(portside tokens create --name NAME --scope admin)",
            EXIT_AUTH,
        )
    return PortsideClient(settings.url, settings.token.reveal())


def _timestamp(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else ""


def _duration(started: str | None, finished: str | None) -> str:
    if not started or not finished:
        return ""
    elapsed = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
    seconds = int(elapsed.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _shorten(text: str | None, width: int = 50) -> str:
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first if len(first) <= width else first[: width - 1] + "…"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _environment_row(env: dict[str, Any]) -> dict[str, Any]:
    current = env.get("current_deployment") or {}
    deployment = f"{current['id']} {current.get('status', '')}".strip() if current else ""
    reason = env.get("pending_reason")  # what a waiting environment waits for
    return {
        **env,
        "status": f"{env['status']} ({reason})" if reason else env["status"],
        "pr": env.get("pr_number") or "",
        "deployment": deployment,
        "address": env.get("address") or env.get("domain") or "",
    }


def api_services_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = _client(settings).services()
    if not args.json:  # a git-URL service is known by its URL, not its images' git/<name>
        rows = [{**row, "repository": row.get("git_url") or row["repository"]} for row in rows]
    _emit(rows, SERVICE_COLUMNS, args.json)
    return 0


def api_services_create(settings: Settings, args: argparse.Namespace) -> int:
    service = _client(settings).create_service(_service_fields(args))
    if args.json:
        _print_json(service)
    else:
        print(f"created service {service['name']} (id {service['id']})")
    return 0


def cmd_services_show(settings: Settings, args: argparse.Namespace) -> int:
    client = _client(settings)
    service = client.find_service(args.service)
    environments = client.environments({"service": service["id"]})
    if args.json:
        _print_json({**service, "environments": environments})
        return 0
    width = max(len(key) for key in service)
    for key, value in service.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"{key.ljust(width)}  {'' if shown is None else shown}")
    print()
    _emit([_environment_row(env) for env in environments], ENVIRONMENT_COLUMNS, False)
    return 0


def cmd_services_delete(settings: Settings, args: argparse.Namespace) -> int:
    client = _client(settings)
    service = client.find_service(args.service)
    client.delete_service(service["id"])
    print(f"service {service['name']} is deleted; its environments are being torn down")
    return 0


def cmd_vars_list(settings: Settings, args: argparse.Namespace) -> int:
    client = _client(settings)
    service = client.find_service(args.service)
    rows = client.variables(service["id"], reveal=args.reveal)
    if args.json:
        _print_json(rows)
        return 0
    table = [
        {
            **row,
            "secret": "yes" if row.get("secret") else "no",
            "value": row["value"] if args.reveal and row.get("value") is not None else HIDDEN,
            "updated_at": _timestamp(row.get("updated_at")),
        }
        for row in rows
    ]
    _emit(table, VARIABLE_COLUMNS, False)
    return 0


def cmd_vars_set(settings: Settings, args: argparse.Namespace) -> int:
    value = sys.stdin.read().rstrip("\n") if args.value == "-" else args.value
    client = _client(settings)
    service = client.find_service(args.service)
    kind = "build" if args.build else "runtime"
    variable = client.set_variable(
        service["id"], args.name, value, kind=kind, scope=args.scope, secret=not args.public
    )
    if args.json:
        _print_json(variable)
    else:
        secrecy = "secret" if variable.get("secret") else "public"
        print(
            f"set {variable['kind']} variable {variable['name']} of {service['name']} "
            f"(scope {variable['scope']}, {secrecy})"
        )
    return 0


def _build_status(build: dict[str, Any]) -> str:
    """The status, with why a queued build waits when the API says."""
    reason = build.get("waiting_reason")
    return f"{build['status']} (waiting: {reason})" if reason else str(build["status"])


def cmd_builds_list(settings: Settings, args: argparse.Namespace) -> int:
    client = _client(settings)
    params: dict[str, Any] = {}
    if args.service:
        params["service"] = client.find_service(args.service)["id"]
    if args.status:
        params["status"] = args.status
    rows = client.builds(params, limit=args.limit)
    if args.json:
        _print_json(rows)
        return 0
    names = {service["id"]: service["name"] for service in client.services()}
    table = [
        {
            **row,
            "service": names.get(row["service_id"], row["service_id"]),
            "commit": (row.get("commit_sha") or "")[:10],
            "message": _shorten(row.get("commit_message")),
            "status": _build_status(row),
            "created": _timestamp(row.get("created_at")),
            "duration": _duration(row.get("started_at"), row.get("finished_at")),
        }
        for row in rows
    ]
    _emit(table, (*BUILD_COLUMNS, "duration"), False)
    return 0


def cmd_builds_show(settings: Settings, args: argparse.Namespace) -> int:
    """A build, its steps and the images it pushed with their digests."""
    client = _client(settings)
    build = client.build(args.build)
    if args.json:
        _print_json(build)
        return 0
    names = {service["id"]: service["name"] for service in client.services()}
    shown = {
        "id": build["id"],
        "service": names.get(build.get("service_id"), build.get("service_id")),
        "branch": build.get("branch"),
        "commit": build.get("commit_sha"),
        "status": _build_status(build),
        "author": build.get("author"),
        "message": _shorten(build.get("commit_message")),
        "created": _timestamp(build.get("created_at")),
        "duration": _duration(build.get("started_at"), build.get("finished_at")),
        "error": build.get("error"),
    }
    width = max(len(key) for key in shown)
    for key, value in shown.items():
        print(f"{key.ljust(width)}  {'' if value is None else value}")
    if build.get("steps"):
        print()
        _emit(build["steps"], STEP_COLUMNS, False)
    print()
    if build.get("images"):
        _emit(build["images"], IMAGE_COLUMNS, False)
    else:
        print("no images pushed")
    return 0


class _Progress:
    """One line on stderr saying what a quiet build is doing; redrawn in place on a TTY."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = False

    def show(self, text: str) -> None:
        if self.tty:
            self.stream.write(f"\r\x1b[K{text}")
            self.shown = True
        else:
            self.stream.write(f"{text}\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _activity(client: PortsideClient, build_id: int) -> str:
    """What a build is busy with, in a few words ("building", "queued")."""
    from controlplane.client import ClientError

    try:
        build = client.build(build_id)
    except ClientError:
        return "running"
    if build["status"] == "queued":
        return "queued"
    for step in build.get("steps") or []:
        if step.get("status") == "running":
            return STEP_VERBS.get(step["name"], f"running {step['name']}")
    return str(build["status"])


def _env_line(line: dict[str, Any]) -> str:
    """One runtime line as shown: the compose service (or container) it came from first."""
    return f"{line['service'] or line['container']} | {line['line']}"


def _environment_logs(client: PortsideClient, args: argparse.Namespace) -> int:
    """``portside logs --env NAME [-f]``: the recent lines, then (with -f) new ones."""
    from controlplane.client import LogLine

    environment = _resolve_environment(client, args.env)
    params = {"tail": args.tail, "service": args.service}
    recent = client.environment_logs(
        environment["id"], {k: v for k, v in params.items() if v is not None}
    )
    for line in recent["lines"]:
        print(json.dumps(line) if args.json else _env_line(line), flush=True)
    if not args.follow:
        return 0
    for event in client.follow_environment_logs(environment["id"], args.service):
        if isinstance(event, LogLine):
            line = json.loads(event.text)
            print(json.dumps(line) if args.json else _env_line(line), flush=True)
    print(f"portside: environment {environment['name']} was removed", file=sys.stderr)
    return 0


def cmd_logs(settings: Settings, args: argparse.Namespace) -> int:
    from controlplane.client import LogLine, Quiet

    client = _client(settings)
    if (args.env is None) == (args.build is None):
        raise CommandError("give a build's id or --env NAME (not both)", EXIT_USAGE)
    if args.env is not None:
        return _environment_logs(client, args)
    if not args.follow:
        logs = client.logs(args.build)
        if args.json:
            _print_json(logs)
            return 0
        for line in logs["lines"]:
            print(line)
        if not logs["complete"]:
            print(
                f"portside: build {args.build} is {logs['status']}; follow it with -f",
                file=sys.stderr,
            )
        return 0
    client.build(args.build)  # a missing build is a 404 here, before streaming
    progress = _Progress(sys.stderr)
    for event in client.follow_logs(args.build, quiet_after=args.quiet_after):
        if isinstance(event, Quiet):
            progress.show(f"... still {_activity(client, args.build)} ({int(event.seconds)} s)")
        elif isinstance(event, LogLine):
            progress.clear()
            print(json.dumps({"line": event.text}) if args.json else event.text, flush=True)
    progress.clear()
    build = client.build(args.build)
    ending = f"build {build['id']} {build['status']}"
    if build.get("error"):
        ending += f": {_shorten(build['error'], 200)}"
    print(f"portside: {ending}", file=sys.stderr)
    return 0


def _resolve_environment(client: PortsideClient, name_or_id: str) -> dict[str, Any]:
    """An environment by id or name; a service's name means its production environment."""
    from controlplane.client import ClientError

    try:
        return client.find_environment(name_or_id)
    except ClientError as exc:
        if exc.status != 404 or name_or_id.isdigit():
            raise
    for env in client.environments({"kind": "production"}):
        if env.get("service") == name_or_id:
            return env
    raise CommandError(f"there is no environment or service named {name_or_id!r}", EXIT_NOT_FOUND)


def cmd_redeploy(settings: Settings, args: argparse.Namespace) -> int:
    client = _client(settings)
    environment = _resolve_environment(client, args.environment)
    build = client.redeploy(environment["id"])
    if args.json:
        _print_json(build)
    else:
        print(
            f"redeploying {environment['name']}: build {build['id']} of "
            f"{(build.get('commit_sha') or '')[:10]} queued "
            f"(portside logs {build['id']} -f to follow it)"
        )
    return 0


def cmd_deploy(settings: Settings, args: argparse.Namespace) -> int:
    client = _client(settings)
    service = client.find_service(args.service)
    build = client.deploy(service["id"], args.ref)
    if args.json:
        _print_json(build)
    else:
        print(
            f"deploying {service['name']} at {build.get('ref')}: build {build['id']} of "
            f"{(build.get('commit_sha') or '')[:10]} queued "
            f"(portside logs {build['id']} -f to follow it)"
        )
    return 0


def cmd_environments_list(settings: Settings, args: argparse.Namespace, kind: str = "") -> int:
    client = _client(settings)
    params: dict[str, Any] = {}
    if args.service:
        params["service"] = client.find_service(args.service)["id"]
    if kind or getattr(args, "kind", None):
        params["kind"] = kind or args.kind
    rows = client.environments(params)
    if args.json:
        _print_json(rows)
        return 0
    columns = PREVIEW_COLUMNS if kind == "preview" else ENVIRONMENT_COLUMNS
    _emit([_environment_row(env) for env in rows], columns, False)
    return 0


def cmd_environments_create(settings: Settings, args: argparse.Namespace) -> int:
    client = _client(settings)
    service = client.find_service(args.service)
    environment = client.create_environment(service["id"], args.name, args.branch)
    if args.json:
        _print_json(environment)
    else:
        where = environment.get("domain") or "no domain"
        print(
            f"environment {environment['name']} ({where}) tracks {environment['branch']}: "
            "the next push to it builds and deploys it"
        )
    return 0


def cmd_environments_delete(
    settings: Settings, args: argparse.Namespace, kind: str = "environment"
) -> int:
    client = _client(settings)
    environment = client.find_environment(args.environment)
    client.teardown(environment["id"])
    print(f"{kind} {environment['name']} is being torn down")
    return 0


def cmd_promote(settings: Settings, args: argparse.Namespace) -> int:
    client = _client(settings)
    source = _resolve_environment(client, args.source)
    target = _resolve_environment(client, args.to)
    promoted = client.promote(source["id"], target["id"])
    if args.json:
        _print_json(promoted)
        return 0
    current = promoted.get("current_deployment") or {}
    if promoted.get("deployment_id") is None:
        print(f"{promoted['name']}: {promoted['status']} ({promoted.get('status_reason') or ''})")
    else:
        print(
            f"promoting {source['name']} to {promoted['name']}: deployment "
            f"{promoted['deployment_id']} of build {current.get('build_id')} "
            f"({(current.get('commit_sha') or '')[:10]}), nothing rebuilt"
        )
    return 0


def cmd_previews_list(settings: Settings, args: argparse.Namespace) -> int:
    return cmd_environments_list(settings, args, kind="preview")


def cmd_previews_teardown(settings: Settings, args: argparse.Namespace) -> int:
    return cmd_environments_delete(settings, args, kind="preview")


def cmd_previews_approve(settings: Settings, args: argparse.Namespace) -> int:
    client = _client(settings)
    environment = client.find_environment(args.environment)
    approved = client.approve(environment["id"], args.sha)
    if args.secrets:  # the same reviewed commit; refused if a push landed meanwhile
        granted = client.approve_secrets(environment["id"], args.sha)
        approved["secrets_approved_sha"] = granted["secrets_approved_sha"]
    if args.json:
        _print_json(approved)
        return 0
    sha = (approved.get("head_sha") or "")[:10]
    secrets_note = ", with secrets" if args.secrets else ""
    print(f"approved {sha} of {approved['name']}{secrets_note}; {_approval_done(approved)}")
    return 0


def _approval_done(approved: dict[str, Any]) -> str:
    """What an approval set going, for a person: a deployment, a build, or the status."""
    if approved.get("deployment_id"):
        return f"deployment {approved['deployment_id']} recorded; {approved['name']} is deploying"
    if approved.get("build_id"):
        return f"build {approved['build_id']} queued (portside logs {approved['build_id']} -f)"
    reason = approved.get("status_reason")
    return f"{approved['name']} is {approved['status']}" + (f": {reason}" if reason else "")


def cmd_approve(settings: Settings, args: argparse.Namespace) -> int:
    client = _client(settings)
    environment = _resolve_environment(client, args.environment)
    approved = client.approve(environment["id"], args.sha)
    if args.json:
        _print_json(approved)
    else:
        print(f"approved {environment['name']}: {_approval_done(approved)}")
    return 0


def _celery(settings: Settings, argv: list[str]) -> int:
    _check_redis(settings)
    from tasks import worker

    return worker.run(settings, argv)


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


def cmd_buildworker(args: argparse.Namespace) -> int:
    """The build worker is a deployable of its own (:mod:`tasks.buildmain`, which reads
    its own settings and imports no control plane): exec it with the same options."""
    options = ["--loglevel", args.loglevel]
    options += ["--concurrency", str(args.concurrency)] if args.concurrency else []
    options += ["--name", args.name] if args.name else []
    os.execv(sys.executable, [sys.executable, "-m", "buildworker", *options])


def cmd_beat(settings: Settings, args: argparse.Namespace) -> int:
    schedule = settings.data_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    return _celery(settings, ["beat", "-l", args.loglevel, "-s", str(schedule)])


def cmd_flower(settings: Settings, args: argparse.Namespace) -> int:
    return _celery(settings, ["flower", f"--address={args.address}", f"--port={args.port}"])


def cmd_agent(args: argparse.Namespace) -> int:
    """The host agent is a package of its own (no Flask, database or control plane settings):
    exec it."""
    os.execv(sys.executable, [sys.executable, "-m", "hostagent"])


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    """Everything on one machine (:mod:`controlplane.devmode`)."""
    from controlplane import devmode

    _check_redis(settings)
    database = _database(settings, migrated=False)
    return devmode.run(settings, database, devmode.bind_address(os.environ, args.bind))


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
            sub.set_defaults(launches=True)
    flower = add("flower", cmd_flower, "run Flower on the same broker")
    flower.add_argument("--address", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)
    add("agent", cmd_agent, "run the host agent").set_defaults(launches=True)
    dev = add("dev", cmd_dev, "run everything on one machine (SQLite + local Redis)")
    dev.add_argument("--bind", help="address:port (default PORTSIDE_DEV_BIND, else 127.0.0.1:8000)")

    db = add("db", lambda *_: 0, "database migrations")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = add("upgrade", cmd_db_upgrade, "apply migrations", db_commands)
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = add("downgrade", cmd_db_downgrade, "revert migrations", db_commands)
    downgrade.add_argument("revision", nargs="?", default="base")

    secret_parser = add("secrets", lambda *_: 0, "secrets stored encrypted")
    secret_commands = secret_parser.add_subparsers(dest="secrets_command", required=True)
    add(
        "rotate-key",
        cmd_secrets_rotate_key,
        "re-encrypt every stored secret with PORTSIDE_SECRET_KEY",
        secret_commands,
    )

    token_parser = add("tokens", lambda *_: 0, "API tokens")
    token_commands = token_parser.add_subparsers(dest="tokens_command", required=True)
    create = add("create", cmd_tokens_create, "create a token, printed once", token_commands)
    create.add_argument("--name", required=True)
    create.add_argument("--scope", required=True, choices=("admin", "worker", "read"))
    create.add_argument(
        "--builds",
        choices=BUILD_LANES,
        help="a worker token's builds: trusted (the default), untrusted (forks') or all",
    )
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
    host_create.add_argument(
        "--untrusted",
        action="store_true",
        help="runs previews of pull requests from forks, never production",
    )
    host_list = add("list", cmd_hosts_list, "list hosts", host_commands)
    host_list.add_argument("--json", action="store_true")

    github_parser = add("github", lambda *_: 0, "the GitHub App")
    github_commands = github_parser.add_subparsers(dest="github_command", required=True)
    add(
        "sync",
        cmd_github_sync,
        "catch up installations and repositories from GitHub's lists",
        github_commands,
    )

    service_parser = add("services", lambda *_: 0, "services")
    service_parser.epilog = (
        "create and list work on the database directly unless PORTSIDE_URL or PORTSIDE_TOKEN "
        "is set; then they, like show, go through the API. " + API_EPILOG
    )
    service_commands = service_parser.add_subparsers(dest="services_command", required=True)
    service_create = add("create", cmd_services_create, "create a service", service_commands)
    service_create.add_argument("name")
    source = service_create.add_mutually_exclusive_group(required=True)
    source.add_argument("--repository", help="owner/name on GitHub (the App installed)")
    source.add_argument(
        "--git", metavar="URL", help="any git remote instead: https://, ssh://, a local path"
    )
    service_create.add_argument(
        "--git-token-file", metavar="PATH", help="(--git https) file holding a token or user:pass"
    )
    service_create.add_argument(
        "--git-ssh-key-file", metavar="PATH", help="(--git ssh) file holding a deploy key"
    )
    service_create.add_argument(
        "--poll-interval", type=int, default=60, help="(--git) seconds between polls, min 10"
    )
    service_create.add_argument("--branch", help="default: main, or the HEAD of --git")
    service_create.add_argument(
        "--host",
        action="append",
        help="default: the only host there is; repeated: production runs on each, the first "
        "is the service's own host (previews run there)",
    )
    service_create.add_argument(
        "--replicas", type=int, help="containers of production on each host (default 1)"
    )
    service_create.add_argument("--compose-path")
    service_create.add_argument("--port", type=int)
    service_create.add_argument("--domain")
    service_create.add_argument("--watch-path", action="append", help="a glob; repeatable")
    service_create.add_argument("--json", action="store_true", help="(API) print the service")
    service_list = add("list", cmd_services_list, "list services", service_commands)
    service_list.add_argument("--json", action="store_true")
    show = add("show", cmd_services_show, "a service and its environments", service_commands)
    show.add_argument("service", help="name or id")
    show.add_argument("--json", action="store_true")
    delete = add(
        "delete",
        cmd_services_delete,
        "delete a service and tear down its environments (admin)",
        service_commands,
    )
    delete.add_argument("service", help="name or id")
    _add_api_commands(add, commands)
    return parser


API_EPILOG = (
    "Talks to the control plane at PORTSIDE_URL with the API token in PORTSIDE_TOKEN. "
    "Exit status: 0 ok, 1 the server or network failed, 2 bad usage or input refused, "
    "3 not found, 4 missing, invalid or insufficient token."
)


def _add_api_commands(add: Callable[..., Any], commands: Any) -> None:
    """The commands that talk to a running control plane over HTTP."""

    def api(name: str, handler: Callable[..., int], help_text: str, parent: Any) -> Any:
        sub = add(name, handler, help_text, parent)
        sub.epilog = API_EPILOG
        if handler is not _group:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sub

    variables = api("vars", _group, "a service's variables (values hidden unless asked)", commands)
    var_commands = variables.add_subparsers(dest="vars_command", required=True, metavar="COMMAND")
    var_list = api("list", cmd_vars_list, "list a service's variables", var_commands)
    var_list.add_argument("service", help="name or id")
    var_list.add_argument("--reveal", action="store_true", help="show values (admin, audited)")
    var_set = api("set", cmd_vars_set, "set a variable (secret unless --public)", var_commands)
    var_set.add_argument("service", help="name or id")
    var_set.add_argument("name")
    var_set.add_argument("value", help="the value, or - to read it from stdin")
    var_set.add_argument("--build", action="store_true", help="a build argument, not runtime")
    var_set.add_argument("--scope", choices=("all", "production", "preview"), default="all")
    var_set.add_argument("--public", action="store_true", help="not a secret")

    build_parser_ = api("builds", _group, "builds", commands)
    build_commands = build_parser_.add_subparsers(
        dest="builds_command", required=True, metavar="COMMAND"
    )
    build_list = api("list", cmd_builds_list, "list builds, newest first", build_commands)
    build_list.add_argument("--service", help="name or id")
    build_list.add_argument("--status", choices=BUILD_STATUSES)
    build_list.add_argument("--limit", type=int, default=20, help="at most this many (0: all)")
    build_show = api(
        "show", cmd_builds_show, "a build, its steps and its images by digest", build_commands
    )
    build_show.add_argument("build", type=int, help="the build's id")

    logs = api("logs", cmd_logs, "a build's log, or an environment's output", commands)
    logs.add_argument("build", type=int, nargs="?", help="the build's id")
    logs.add_argument("--env", help="an environment's runtime output instead (name or id)")
    logs.add_argument("--service", help="with --env, a compose service's lines only")
    logs.add_argument("--tail", type=int, help="with --env, only the last this many lines")
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="follow the log until the build ends (with --env: until interrupted)",
    )
    logs.add_argument(
        "--quiet-after",
        type=float,
        default=QUIET_AFTER,
        help="with -f, say what the build does after this many seconds without output",
    )

    deploy = api("deploy", cmd_deploy, "build and deploy a branch, tag or commit", commands)
    deploy.add_argument("service", help="name or id")
    deploy.add_argument("--ref", help="a branch, tag or commit SHA (default: the branch's head)")

    redeploy = api("redeploy", cmd_redeploy, "build and deploy an environment again", commands)
    redeploy.add_argument(
        "environment", help="environment name or id (a service's name: its production)"
    )

    environments = api(
        "environments", _group, "production, staging and preview environments", commands
    )
    env_commands = environments.add_subparsers(dest="env_command", required=True, metavar="COMMAND")
    env_list = api("list", cmd_environments_list, "list environments", env_commands)
    env_list.add_argument("--service", help="name or id")
    env_list.add_argument("--kind", help="production, preview, or another such as staging")
    env_create = api(
        "create",
        cmd_environments_create,
        "an environment besides production (staging) tracking a branch (admin)",
        env_commands,
    )
    env_create.add_argument("service", help="name or id")
    env_create.add_argument("name", help="its kind, such as staging (named SERVICE-NAME)")
    env_create.add_argument("--branch", required=True, help="the branch it builds and deploys")
    env_delete = api(
        "delete", cmd_environments_delete, "tear a staging environment down", env_commands
    )
    env_delete.add_argument("environment", help="name or id")

    promote = api(
        "promote",
        cmd_promote,
        "deploy what one environment runs to another, without building again (admin)",
        commands,
    )
    promote.add_argument("source", help="environment name or id (a service's name: production)")
    promote.add_argument("--to", required=True, help="the target environment's name or id")

    previews = api("previews", _group, "preview environments of pull requests", commands)
    preview_commands = previews.add_subparsers(
        dest="previews_command", required=True, metavar="COMMAND"
    )
    preview_list = api("list", cmd_previews_list, "list previews", preview_commands)
    preview_list.add_argument("--service", help="name or id")
    teardown = api("teardown", cmd_previews_teardown, "tear a preview down", preview_commands)
    teardown.add_argument("environment", help="the preview's name or id")
    approve = api(
        "approve",
        cmd_previews_approve,
        "build and run a fork preview's current head commit (admin)",
        preview_commands,
    )
    approve.add_argument("environment", help="the preview's name or id")
    approve.add_argument(
        "--sha",
        required=True,
        help="the commit you reviewed (all 40 hex digits); refused if the pull request moved on",
    )
    approve.add_argument(
        "--secrets", action="store_true", help="also give that commit the service's secrets"
    )
    release = api(
        "approve",
        cmd_approve,
        "release the deployment waiting for approval in an environment (admin)",
        commands,
    )
    release.add_argument("environment", help="name or id (a service's name: production)")
    release.add_argument(
        "--sha", help="the commit you reviewed; refused unless it is the one waiting"
    )


def _group(*_: Any) -> int:
    return 0


def _failure(exc: PortsideError) -> int:
    """One line on stderr for a failure a person can fix; the exit status says which kind."""
    from controlplane.client import ClientError
    from controlplane.errors import ApiError, ConfigError

    if isinstance(exc, ConfigError):
        print(f"portside: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, ClientError):
        print(f"portside: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, ApiError):
        details = f" ({json.dumps(exc.details)})" if exc.details else ""
        print(f"portside: {exc.message}{details}", file=sys.stderr)
        return {404: EXIT_NOT_FOUND, 401: EXIT_AUTH, 403: EXIT_AUTH}.get(exc.status, EXIT_USAGE)
    print(f"portside: {exc}", file=sys.stderr)
    return EXIT_UNAVAILABLE


def _use_running_dev(environ: MutableMapping[str, str]) -> None:
    """With neither PORTSIDE_URL nor PORTSIDE_TOKEN set, talk to the `portside dev` running
    on this data directory, as its greeting promised."""
    if any((environ.get(name) or "").strip() for name in ("PORTSIDE_URL", "PORTSIDE_TOKEN")):
        return
    from contracts.environ import default_data_dir
    from controlplane.devmode import connection

    running = connection(Path(environ.get("PORTSIDE_DATA_DIR") or default_data_dir()))
    if running is not None:
        environ["PORTSIDE_URL"], environ["PORTSIDE_TOKEN"] = running.url, running.token


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "launches", False):  # the agent or a build worker: its own settings
        launched: int = args.handler(args)
        return launched
    from controlplane.errors import PortsideError
    from controlplane.settings import Settings

    try:
        if args.handler is not cmd_dev:
            _use_running_dev(os.environ)
        settings = Settings.from_env(os.environ)
        result: int = args.handler(settings, args)
        return result
    except CommandError as exc:
        print(f"portside: {exc}", file=sys.stderr)
        return exc.code
    except PortsideError as exc:
        return _failure(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
