"""Admin commands: they work on the database directly (``db``, ``secrets``, ``tokens``,
``hosts``, ``github``), so they run where the control plane's settings are."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from controlplane.cli.common import CommandError, emit, load_settings
from controlplane.statuses import BUILD_LANES, TokenScope

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from controlplane.db import Database
    from controlplane.models import ApiToken, Host
    from controlplane.settings import Settings

T = TypeVar("T")
JSON = click.option("--json", "as_json", is_flag=True)
TOKEN_COLUMNS = ("id", "name", "scope", "builds", "created_at", "revoked_at")
HOST_COLUMNS = ("id", "name", "generation", "last_seen_at", "agent_version", "untrusted")


def open_database(settings: Settings, *, migrated: bool = True) -> Database:
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


def in_session(settings: Settings, action: Callable[[Session], T]) -> T:
    """``action`` in one transaction of the migrated database."""
    with open_database(settings).session_scope() as session:
        return action(session)


def _print_secret(create: Callable[[Session], str]) -> None:
    """What ``create`` made, then its secret alone on the last line (``tail -n 1``)."""
    print(in_session(load_settings(), create))


def _listing(
    rows_of: Callable[[Session], list[dict[str, Any]]], columns: Sequence[str], as_json: bool
) -> None:
    emit(in_session(load_settings(), rows_of), columns, as_json)


def _iso(moment: datetime | None, missing: str = "") -> str:
    return moment.isoformat(timespec="seconds") if moment else missing


def _token_row(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "scope": token.scope,
        "builds": token.build_lane if token.scope == TokenScope.WORKER else "",
        "created_at": _iso(token.created_at),
        "revoked_at": _iso(token.revoked_at),
    }


def _host_row(host: Host) -> dict[str, Any]:
    return {
        "id": host.id,
        "name": host.name,
        "generation": host.generation,
        "last_seen_at": _iso(host.last_seen_at, "never"),
        "agent_version": host.agent_version,
        "untrusted": "yes" if host.untrusted else "",
    }


def _migrate(revision: str, move: Callable[[Any, str], None]) -> None:
    from controlplane.settings import mask_url

    settings = load_settings()
    move(open_database(settings, migrated=False).engine, revision)
    print(f"database at {mask_url(settings.database_url)} is at revision {revision}")


@click.group(help="database migrations")
def db() -> None:
    pass


@db.command(help="apply migrations")
@click.argument("revision", default="head", required=False)
def upgrade(revision: str) -> None:
    from controlplane import migrate

    _migrate(revision, migrate.upgrade)


@db.command(help="revert migrations")
@click.argument("revision", default="base", required=False)
def downgrade(revision: str) -> None:
    from controlplane import migrate

    _migrate(revision, migrate.downgrade)


@click.group(help="secrets stored encrypted")
def secrets() -> None:
    pass


@secrets.command("rotate-key", help="re-encrypt every stored secret with PORTSIDE_SECRET_KEY")
def rotate_key() -> None:
    """Re-encrypt every stored secret with PORTSIDE_SECRET_KEY (old keys from
    PORTSIDE_SECRET_KEY_OLD); afterwards PORTSIDE_SECRET_KEY_OLD can be removed."""
    from controlplane.crypto import SecretBox
    from controlplane.services import secrets as stored

    settings = load_settings()
    box = SecretBox.from_settings(settings)
    counts = in_session(settings, lambda session: stored.rotate_key(session, box, "cli"))
    print(", ".join(f"{count} {name}" for name, count in counts.items()) + " re-encrypted")


@click.group(help="API tokens")
def tokens() -> None:
    pass


@tokens.command("create", help="create a token, printed once")
@click.option("--name", required=True)
@click.option("--scope", required=True, type=click.Choice(("admin", "worker", "read")))
@click.option(
    "--builds",
    type=click.Choice(BUILD_LANES),
    help="a worker token's builds: trusted (the default), untrusted (forks') or all",
)
def create_token(name: str, scope: str, builds: str | None) -> None:
    from controlplane.services import tokens as stored

    def action(session: Session) -> str:
        token, secret = stored.create_token(session, name, scope, actor="cli", builds=builds)
        lane = f" for {token.build_lane} builds" if token.scope == TokenScope.WORKER else ""
        print(
            f"created {token.scope} token {token.id}{lane} named {token.name!r}; it is shown once:"
        )
        return secret

    _print_secret(action)


@tokens.command("list", help="list tokens")
@JSON
def list_tokens(as_json: bool) -> None:
    from controlplane.services.tokens import list_tokens as listed

    _listing(lambda session: [_token_row(t) for t in listed(session)], TOKEN_COLUMNS, as_json)


@tokens.command("revoke", help="revoke a token")
@click.argument("token_id", metavar="ID", type=int)
def revoke_token(token_id: int) -> None:
    from controlplane.services import tokens as stored

    in_session(load_settings(), lambda session: stored.revoke_token(session, token_id, "cli"))
    print(f"token {token_id} revoked")


@click.group(help="agent hosts")
def hosts() -> None:
    pass


@hosts.command("create", help="create a host and its agent token")
@click.argument("name")
@click.option("--previews", is_flag=True, help="accepts preview environments")
@click.option(
    "--untrusted", is_flag=True, help="runs previews of pull requests from forks, never production"
)
def create_host(name: str, previews: bool, untrusted: bool) -> None:
    from controlplane.services import hosts as stored

    def action(session: Session) -> str:
        host, secret = stored.create_host(session, name, "cli", previews, untrusted=untrusted)
        kind = "untrusted host" if host.untrusted else "host"
        print(f"created {kind} {host.name} (id {host.id}); its agent token is shown once:")
        return secret

    _print_secret(action)


@hosts.command("list", help="list hosts")
@JSON
def list_hosts(as_json: bool) -> None:
    from controlplane.services.hosts import list_hosts as listed

    _listing(lambda session: [_host_row(h) for h in listed(session)], HOST_COLUMNS, as_json)


@click.group(help="the GitHub App")
def github() -> None:
    pass


@github.command(help="catch up installations and repositories from GitHub's lists")
def sync() -> None:
    """Catch up installations (and their repositories) whose webhooks were missed."""
    from controlplane.services import appsetup, installations

    settings = load_settings()
    database = open_database(settings)
    app = appsetup.AppSource(settings, database).app()
    if app is None:
        raise CommandError(
            "no GitHub App is configured: set PORTSIDE_GITHUB_APP_ID and "
            "PORTSIDE_GITHUB_PRIVATE_KEY, or register one on the dashboard's setup page"
        )
    for installation_id, what in installations.sync(database, app).items():
        print(f"installation {installation_id}: {what}")


COMMANDS = (db, secrets, tokens, hosts, github)
