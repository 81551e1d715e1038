"""API commands about environments: ``environments``, ``promote`` and ``previews``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from controlplane.cli.common import (
    API_EPILOG,
    ENVIRONMENT_COLUMNS,
    EXIT_NOT_FOUND,
    CommandError,
    api_client,
    api_command,
    emit,
    environment_row,
    list_filters,
    print_json,
)

if TYPE_CHECKING:
    from controlplane.client import PortsideClient

PREVIEW_COLUMNS = ("id", "name", "service", "pr", "branch", "status", "deployment", "address")


def resolve_environment(client: PortsideClient, name_or_id: str) -> dict[str, Any]:
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


def approval_done(approved: dict[str, Any]) -> str:
    """What an approval set going, for a person: a deployment, a build, or the status."""
    if approved.get("deployment_id"):
        return f"deployment {approved['deployment_id']} recorded; {approved['name']} is deploying"
    if approved.get("build_id"):
        return f"build {approved['build_id']} queued (portside logs {approved['build_id']} -f)"
    reason = approved.get("status_reason")
    return f"{approved['name']} is {approved['status']}" + (f": {reason}" if reason else "")


def _list(service: str | None, kind: str | None, as_json: bool, columns: tuple[str, ...]) -> None:
    client = api_client()
    rows = client.environments(list_filters(client, service, kind=kind))
    if as_json:
        print_json(rows)
    else:
        emit([environment_row(env) for env in rows], columns, False)


def _tear_down(environment: str, kind: str) -> None:
    client = api_client()
    found = client.find_environment(environment)
    client.teardown(found["id"])
    print(f"{kind} {found['name']} is being torn down")


SERVICE_FILTER = click.option("--service", help="name or id")


@click.group(help="production, staging and preview environments", epilog=API_EPILOG)
def environments() -> None:
    pass


@api_command(environments, "list", "list environments")
@SERVICE_FILTER
@click.option("--kind", help="production, preview, or another such as staging")
def list_environments(service: str | None, kind: str | None, as_json: bool) -> None:
    _list(service, kind, as_json, ENVIRONMENT_COLUMNS)


@api_command(
    environments,
    "create",
    "an environment besides production (staging) tracking a branch (admin)",
)
@click.argument("service")
@click.argument("name")
@click.option("--branch", required=True, help="the branch it builds and deploys")
def create_environment(service: str, name: str, branch: str, as_json: bool) -> None:
    """NAME is its kind, such as staging (named SERVICE-NAME)."""
    client = api_client()
    found = client.find_service(service)
    environment = client.create_environment(found["id"], name, branch)
    if as_json:
        print_json(environment)
        return
    where = environment.get("domain") or "no domain"
    print(
        f"environment {environment['name']} ({where}) tracks {environment['branch']}: "
        "the next push to it builds and deploys it"
    )


@api_command(environments, "delete", "tear a staging environment down")
@click.argument("environment")
def delete_environment(environment: str, as_json: bool) -> None:
    _tear_down(environment, "environment")


@click.command(
    help="deploy what one environment runs to another, without building again (admin)",
    epilog=API_EPILOG,
)
@click.argument("source")
@click.option("--to", "target", required=True, help="the target environment's name or id")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
def promote(source: str, target: str, as_json: bool) -> None:
    """SOURCE: an environment's name or id (a service's name: production)."""
    client = api_client()
    origin = resolve_environment(client, source)
    destination = resolve_environment(client, target)
    promoted = client.promote(origin["id"], destination["id"])
    if as_json:
        print_json(promoted)
        return
    current = promoted.get("current_deployment") or {}
    if promoted.get("deployment_id") is None:
        print(f"{promoted['name']}: {promoted['status']} ({promoted.get('status_reason') or ''})")
    else:
        print(
            f"promoting {origin['name']} to {promoted['name']}: deployment "
            f"{promoted['deployment_id']} of build {current.get('build_id')} "
            f"({(current.get('commit_sha') or '')[:10]}), nothing rebuilt"
        )


@click.group(help="preview environments of pull requests", epilog=API_EPILOG)
def previews() -> None:
    pass


@api_command(previews, "list", "list previews")
@SERVICE_FILTER
def list_previews(service: str | None, as_json: bool) -> None:
    _list(service, "preview", as_json, PREVIEW_COLUMNS)


@api_command(previews, "teardown", "tear a preview down")
@click.argument("environment")
def teardown_preview(environment: str, as_json: bool) -> None:
    _tear_down(environment, "preview")


@api_command(previews, "approve", "build and run a fork preview's current head commit (admin)")
@click.argument("environment")
@click.option(
    "--sha",
    required=True,
    help="the commit you reviewed (all 40 hex digits); refused if the pull request moved on",
)
@click.option("--secrets", is_flag=True, help="also give that commit the service's secrets")
def approve_preview(environment: str, sha: str, secrets: bool, as_json: bool) -> None:
    client = api_client()
    found = client.find_environment(environment)
    approved = client.approve(found["id"], sha)
    if secrets:  # the same reviewed commit; refused if a push landed meanwhile
        granted = client.approve_secrets(found["id"], sha)
        approved["secrets_approved_sha"] = granted["secrets_approved_sha"]
    if as_json:
        print_json(approved)
        return
    secrets_note = ", with secrets" if secrets else ""
    short = (approved.get("head_sha") or "")[:10]
    print(f"approved {short} of {approved['name']}{secrets_note}; {approval_done(approved)}")


COMMANDS = (environments, promote, previews)
