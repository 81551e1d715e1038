"""What every ``portside`` command shares: exit statuses, the one-line failure, settings,
and the table and JSON printers.

Imports nothing heavy: ``portside --help`` loads this module.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from controlplane.client import PortsideClient
    from controlplane.errors import PortsideError
    from controlplane.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
API_VARIABLES = ("PORTSIDE_URL", "PORTSIDE_TOKEN")
API_EPILOG = (
    "Talks to the control plane at PORTSIDE_URL with the API token in PORTSIDE_TOKEN. "
    "Exit status: 0 ok, 1 the server or network failed, 2 bad usage or input refused, "
    "3 not found, 4 missing, invalid or insufficient token."
)
ENVIRONMENT_COLUMNS = ("id", "name", "kind", "service", "host", "status", "deployment", "address")


class CommandError(Exception):
    """A failure to report as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code


def api_configured(environ: Mapping[str, str]) -> bool:
    """Whether PORTSIDE_URL or PORTSIDE_TOKEN names a control plane to talk to."""
    return any((environ.get(name) or "").strip() for name in API_VARIABLES)


def use_running_dev(environ: MutableMapping[str, str]) -> None:
    """With neither PORTSIDE_URL nor PORTSIDE_TOKEN set, talk to the `portside dev` running
    on this data directory, as its greeting promised."""
    if api_configured(environ):
        return
    from contracts.environ import default_data_dir
    from controlplane.devmode import connection

    running = connection(Path(environ.get("PORTSIDE_DATA_DIR") or default_data_dir()))
    if running is not None:
        environ["PORTSIDE_URL"], environ["PORTSIDE_TOKEN"] = running.url, running.token


def load_settings(*, dev: bool = False) -> Settings:
    """The control plane's settings from the environment (read once per command); every
    command but ``dev`` itself first looks for a running ``portside dev``."""
    from controlplane.settings import Settings

    if not dev:
        use_running_dev(os.environ)
    return Settings.from_env(os.environ)


def failure(exc: PortsideError) -> int:
    """One line on stderr for a failure a person can fix; the exit status says which kind."""
    from controlplane.client import ClientError
    from controlplane.errors import (
        ConfigError,
        DomainError,
        NotFound,
        NotPermitted,
        Unauthenticated,
    )

    if isinstance(exc, ConfigError):
        print(f"portside: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, ClientError):
        print(f"portside: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, DomainError):
        details = f" ({json.dumps(exc.details)})" if exc.details else ""
        print(f"portside: {exc.message}{details}", file=sys.stderr)
        if isinstance(exc, NotFound):
            return EXIT_NOT_FOUND
        return EXIT_AUTH if isinstance(exc, (Unauthenticated, NotPermitted)) else EXIT_USAGE
    print(f"portside: {exc}", file=sys.stderr)
    return EXIT_UNAVAILABLE


def emit(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """Rows as JSON, or as a table of ``columns`` with upper-case headings."""
    if as_json:
        print_json(rows)
        return
    widths = [max([len(c)] + [len(str(r.get(c) or "")) for r in rows]) for c in columns]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print(
            "  ".join(str(row.get(c) or "").ljust(w) for c, w in zip(columns, widths, strict=True))
        )


def emit_fields(shown: Mapping[str, Any]) -> None:
    """One ``key  value`` line per field, keys aligned."""
    width = max(len(key) for key in shown)
    for key, value in shown.items():
        print(f"{key.ljust(width)}  {'' if value is None else value}")


def api_command(group: click.Group, name: str, help_text: str) -> Callable[[F], click.Command]:
    """A command of ``group`` that talks to the API: its epilog says how, and ``--json``
    prints what the API answered."""

    def decorate(function: F) -> click.Command:
        with_json = click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
        return group.command(name, help=help_text, epilog=API_EPILOG)(with_json(function))

    return decorate


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def api_client(settings: Settings | None = None) -> PortsideClient:
    """The HTTP client of the control plane at PORTSIDE_URL, with PORTSIDE_TOKEN."""
    from controlplane.client import PortsideClient

    settings = settings or load_settings()
    if not settings.token:
        raise CommandError(
            f"PORTSIDE_TOKEN is not set: the API at {settings.url} needs a token "
            "(portside tokens create --name NAME --scope admin)",
            EXIT_AUTH,
        )
    return PortsideClient(settings.url, settings.token.reveal())


def list_filters(
    client: PortsideClient, service: str | None, **others: str | None
) -> dict[str, Any]:
    """A listing's query: the service (a name or id) by its id, and the other filters given."""
    params: dict[str, Any] = {name: value for name, value in others.items() if value}
    if service:
        params["service"] = client.find_service(service)["id"]
    return params


def timestamp(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else ""


def duration(started: str | None, finished: str | None) -> str:
    if not started or not finished:
        return ""
    elapsed = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
    seconds = int(elapsed.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def shorten(text: str | None, width: int = 50) -> str:
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first if len(first) <= width else first[: width - 1] + "…"


def environment_row(env: dict[str, Any]) -> dict[str, Any]:
    """An environment as a table row: its deployment and why it waits, in a few words."""
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
