"""API commands about builds: ``vars``, ``builds``, ``deploy``, ``redeploy`` and
``approve``. They talk to a running control plane over HTTP (:mod:`controlplane.client`)
and import nothing of the server side."""

from __future__ import annotations

import sys
from typing import Any

import click

from controlplane.cli.common import (
    API_EPILOG,
    api_client,
    api_command,
    duration,
    emit,
    emit_fields,
    list_filters,
    print_json,
    shorten,
    timestamp,
)
from controlplane.cli.environments import approval_done, resolve_environment
from controlplane.statuses import BUILD_STATUSES

BUILD_COLUMNS = ("id", "service", "branch", "commit", "status", "author", "message", "created")
VARIABLE_COLUMNS = ("name", "kind", "scope", "secret", "value", "updated_at")
STEP_COLUMNS = ("name", "status", "attempts", "error")
IMAGE_COLUMNS = ("service", "reference", "tag")
HIDDEN = "***"
SERVICE = click.argument("service", metavar="SERVICE")


@click.group("vars", help="a service's variables (values hidden unless asked)", epilog=API_EPILOG)
def variables() -> None:
    pass


@api_command(variables, "list", "list a service's variables")
@SERVICE
@click.option("--reveal", is_flag=True, help="show values (admin, audited)")
def list_variables(service: str, reveal: bool, as_json: bool) -> None:
    client = api_client()
    rows = client.variables(client.find_service(service)["id"], reveal=reveal)
    if as_json:
        print_json(rows)
        return
    table = [
        {
            **row,
            "secret": "yes" if row.get("secret") else "no",
            "value": row["value"] if reveal and row.get("value") is not None else HIDDEN,
            "updated_at": timestamp(row.get("updated_at")),
        }
        for row in rows
    ]
    emit(table, VARIABLE_COLUMNS, False)


@api_command(variables, "set", "set a variable (secret unless --public)")
@SERVICE
@click.argument("name")
@click.argument("value")
@click.option("--build", is_flag=True, help="a build argument, not runtime")
@click.option("--scope", type=click.Choice(("all", "production", "preview")), default="all")
@click.option("--public", is_flag=True, help="not a secret")
def set_variable(
    *, service: str, name: str, value: str, build: bool, scope: str, public: bool, as_json: bool
) -> None:
    """VALUE is the value, or - to read it from stdin."""
    value = sys.stdin.read().rstrip("\n") if value == "-" else value
    client = api_client()
    found = client.find_service(service)
    kind = "build" if build else "runtime"
    variable = client.set_variable(
        found["id"], name, value, kind=kind, scope=scope, secret=not public
    )
    if as_json:
        print_json(variable)
    else:
        secrecy = "secret" if variable.get("secret") else "public"
        print(
            f"set {variable['kind']} variable {variable['name']} of {found['name']} "
            f"(scope {variable['scope']}, {secrecy})"
        )


def build_status(build: dict[str, Any]) -> str:
    """The status, with why a queued build waits when the API says."""
    reason = build.get("waiting_reason")
    return f"{build['status']} (waiting: {reason})" if reason else str(build["status"])


@click.group(help="builds", epilog=API_EPILOG)
def builds() -> None:
    pass


@api_command(builds, "list", "list builds, newest first")
@click.option("--service", help="name or id")
@click.option("--status", type=click.Choice(BUILD_STATUSES))
@click.option("--limit", type=int, default=20, help="at most this many (0: all)")
def list_builds(service: str | None, status: str | None, limit: int, as_json: bool) -> None:
    client = api_client()
    rows = client.builds(list_filters(client, service, status=status), limit=limit)
    if as_json:
        print_json(rows)
        return
    names = {found["id"]: found["name"] for found in client.services()}
    table = [
        {
            **row,
            "service": names.get(row["service_id"], row["service_id"]),
            "commit": (row.get("commit_sha") or "")[:10],
            "message": shorten(row.get("commit_message")),
            "status": build_status(row),
            "created": timestamp(row.get("created_at")),
            "duration": duration(row.get("started_at"), row.get("finished_at")),
        }
        for row in rows
    ]
    emit(table, (*BUILD_COLUMNS, "duration"), False)


@api_command(builds, "show", "a build, its steps and its images by digest")
@click.argument("build_id", metavar="BUILD", type=int)
def show_build(build_id: int, as_json: bool) -> None:
    """A build, its steps and the images it pushed with their digests."""
    client = api_client()
    build = client.build(build_id)
    if as_json:
        print_json(build)
        return
    names = {found["id"]: found["name"] for found in client.services()}
    emit_fields(
        {
            "id": build["id"],
            "service": names.get(build.get("service_id"), build.get("service_id")),
            "branch": build.get("branch"),
            "commit": build.get("commit_sha"),
            "status": build_status(build),
            "author": build.get("author"),
            "message": shorten(build.get("commit_message")),
            "created": timestamp(build.get("created_at")),
            "duration": duration(build.get("started_at"), build.get("finished_at")),
            "error": build.get("error"),
        }
    )
    if build.get("steps"):
        print()
        emit(build["steps"], STEP_COLUMNS, False)
    print()
    if build.get("images"):
        emit(build["images"], IMAGE_COLUMNS, False)
    else:
        print("no images pushed")


def _queued(what: str, build: dict[str, Any]) -> None:
    print(
        f"{what}: build {build['id']} of {(build.get('commit_sha') or '')[:10]} queued "
        f"(portside logs {build['id']} -f to follow it)"
    )


@click.command(help="build and deploy a branch, tag or commit", epilog=API_EPILOG)
@SERVICE
@click.option("--ref", help="a branch, tag or commit SHA (default: the branch's head)")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
def deploy(service: str, ref: str | None, as_json: bool) -> None:
    client = api_client()
    found = client.find_service(service)
    build = client.deploy(found["id"], ref)
    if as_json:
        print_json(build)
    else:
        _queued(f"deploying {found['name']} at {build.get('ref')}", build)


@click.command(help="build and deploy an environment again", epilog=API_EPILOG)
@click.argument("environment")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
def redeploy(environment: str, as_json: bool) -> None:
    """ENVIRONMENT: its name or id (a service's name: its production)."""
    client = api_client()
    found = resolve_environment(client, environment)
    build = client.redeploy(found["id"])
    if as_json:
        print_json(build)
    else:
        _queued(f"redeploying {found['name']}", build)


@click.command(
    help="release the deployment waiting for approval in an environment (admin)",
    epilog=API_EPILOG,
)
@click.argument("environment")
@click.option("--sha", help="the commit you reviewed; refused unless it is the one waiting")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
def approve(environment: str, sha: str | None, as_json: bool) -> None:
    """ENVIRONMENT: its name or id (a service's name: production)."""
    client = api_client()
    found = resolve_environment(client, environment)
    approved = client.approve(found["id"], sha)
    if as_json:
        print_json(approved)
    else:
        print(f"approved {found['name']}: {approval_done(approved)}")


COMMANDS = (variables, builds, deploy, redeploy, approve)
