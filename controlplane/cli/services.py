"""``portside services``: create, list, show and delete services.

``create`` and ``list`` also work before any control plane runs or any token exists (the
first service of a new installation): without PORTSIDE_URL and PORTSIDE_TOKEN they go to
the database, otherwise through the API. One command each; only where it stores and
reads (a :class:`Catalog`) differs, and both give the API's representation of a service.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

from controlplane.cli.common import (
    API_EPILOG,
    ENVIRONMENT_COLUMNS,
    api_client,
    api_configured,
    emit,
    emit_fields,
    environment_row,
    load_settings,
    print_json,
)

if TYPE_CHECKING:
    from controlplane.client import PortsideClient
    from controlplane.settings import Settings

SERVICE_COLUMNS = ("id", "name", "repository", "branch", "host", "domain")


class Catalog(Protocol):
    """Where services are created and listed, as the API represents them."""

    def create(self, fields: dict[str, Any]) -> dict[str, Any]: ...

    def list(self) -> list[dict[str, Any]]: ...


class ApiCatalog:
    """The services of the control plane at PORTSIDE_URL."""

    def __init__(self, client: PortsideClient) -> None:
        self.client = client

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        return self.client.create_service(fields)

    def list(self) -> list[dict[str, Any]]:
        return self.client.services()


class DatabaseCatalog:
    """The services in the database, for an installation with no API token yet."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        from controlplane.cli.admin import in_session
        from controlplane.crypto import SecretBox
        from controlplane.schemas import ServiceSchema
        from controlplane.services import catalog as service_catalog
        from controlplane.services import scaling, servicerules

        fields, scale = scaling.split(fields)
        spec = servicerules.spec_from(fields)
        settings = self.settings
        box = SecretBox.from_settings(settings) if settings.secret_key else None

        def action(session: Any) -> dict[str, Any]:
            service = service_catalog.create_service(
                session, spec, "cli", box=box, allow_local_git=settings.allow_local_git
            )
            if scale:
                service = scaling.scale(session, service.id, "cli", **scale)
            dumped: dict[str, Any] = ServiceSchema().dump(service)
            return dumped

        return in_session(settings, action)

    def list(self) -> list[dict[str, Any]]:
        from controlplane.cli.admin import in_session
        from controlplane.schemas import ServiceSchema
        from controlplane.services import catalog as service_catalog

        return in_session(
            self.settings,
            lambda session: ServiceSchema(many=True).dump(service_catalog.list_services(session)),
        )


def catalog(settings: Settings) -> Catalog:
    if api_configured(os.environ):
        return ApiCatalog(api_client(settings))
    return DatabaseCatalog(settings)


def read_secret_file(path: str | None) -> str | None:
    """A credential from a file (``-``: standard input), never from the command line."""
    if path is None:
        return None
    return (sys.stdin.read() if path == "-" else Path(path).read_text()).strip()


@click.group(
    help="services",
    epilog="create and list work on the database directly unless PORTSIDE_URL or "
    "PORTSIDE_TOKEN is set; then they, like show, go through the API. " + API_EPILOG,
)
def services() -> None:
    pass


@services.command("create", help="create a service")
@click.argument("name")
@click.option("--repository", help="owner/name on GitHub (the App installed)")
@click.option("--git", metavar="URL", help="any git remote instead: https://, ssh://, a local path")
@click.option(
    "--git-token-file", metavar="PATH", help="(--git https) file holding a token or user:pass"
)
@click.option("--git-ssh-key-file", metavar="PATH", help="(--git ssh) file holding a deploy key")
@click.option("--poll-interval", type=int, default=60, help="(--git) seconds between polls, min 10")
@click.option("--branch", help="default: main, or the HEAD of --git")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="default: the only host there is; repeated: production runs on each, the first "
    "is the service's own host (previews run there)",
)
@click.option("--replicas", type=int, help="containers of production on each host (default 1)")
@click.option("--compose-path")
@click.option("--port", type=int)
@click.option("--domain")
@click.option("--watch-path", multiple=True, help="a glob; repeatable")
@click.option("--json", "as_json", is_flag=True, help="print the service")
def create_service(
    *,
    name: str,
    repository: str | None,
    git: str | None,
    git_token_file: str | None,
    git_ssh_key_file: str | None,
    poll_interval: int,
    branch: str | None,
    hosts: tuple[str, ...],
    replicas: int | None,
    compose_path: str | None,
    port: int | None,
    domain: str | None,
    watch_path: tuple[str, ...],
    as_json: bool,
) -> None:
    if (repository is None) == (git is None):
        raise click.UsageError(
            "argument --git: not allowed with argument --repository"
            if git
            else "one of the arguments --repository --git is required"
        )
    scale: dict[str, Any] = {"hosts": list(hosts)} if len(hosts) > 1 else {}
    if replicas is not None:
        scale["replicas"] = replicas
    fields = {
        **scale,
        "name": name,
        "repository": repository,
        "git_url": git,
        "git_token": read_secret_file(git_token_file),
        "git_ssh_key": read_secret_file(git_ssh_key_file),
        "poll_interval": poll_interval,
        "branch": branch,
        "host": hosts[0] if hosts else "",
        "compose_path": compose_path,
        "port": port,
        "domain": domain,
        "watch_paths": list(watch_path),
    }
    service = catalog(load_settings()).create(fields)
    if as_json:
        print_json(service)
    else:
        print(f"created service {service['name']} (id {service['id']})")


@services.command("list", help="list services")
@click.option("--json", "as_json", is_flag=True)
def list_services(as_json: bool) -> None:
    rows = catalog(load_settings()).list()
    if not as_json:  # a git-URL service is known by its URL, not its images' git/<name>
        rows = [{**row, "repository": row.get("git_url") or row["repository"]} for row in rows]
    emit(rows, SERVICE_COLUMNS, as_json)


@services.command("show", help="a service and its environments", epilog=API_EPILOG)
@click.argument("service", metavar="SERVICE")
@click.option("--json", "as_json", is_flag=True)
def show_service(service: str, as_json: bool) -> None:
    client = api_client(load_settings())
    found = client.find_service(service)
    environments = client.environments({"service": found["id"]})
    if as_json:
        print_json({**found, "environments": environments})
        return
    emit_fields(
        {
            key: ", ".join(value) if isinstance(value, list) else value
            for key, value in found.items()
        }
    )
    print()
    emit([environment_row(env) for env in environments], ENVIRONMENT_COLUMNS, False)


@services.command(
    "delete", help="delete a service and tear down its environments (admin)", epilog=API_EPILOG
)
@click.argument("service", metavar="SERVICE")
def delete_service(service: str) -> None:
    client = api_client(load_settings())
    found = client.find_service(service)
    client.delete_service(found["id"])
    print(f"service {found['name']} is deleted; its environments are being torn down")


COMMANDS = (services,)
