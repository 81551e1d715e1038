"""``portside logs``: a build's log, or an environment's runtime output, printed or
followed over the API's event streams."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

import click

from contracts.steps import STEPS, Step
from controlplane.cli.common import (
    API_EPILOG,
    EXIT_USAGE,
    CommandError,
    api_client,
    print_json,
    shorten,
)
from controlplane.cli.environments import resolve_environment

if TYPE_CHECKING:
    from controlplane.client import PortsideClient

QUIET_AFTER = 10.0


class Progress:
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


def activity(client: PortsideClient, build_id: int) -> str:
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
            name = step["name"]
            return Step(name).verb if name in STEPS else f"running {name}"
    return str(build["status"])


def _env_line(line: dict[str, Any], as_json: bool) -> str:
    """One runtime line as shown: the compose service (or container) it came from first."""
    return (
        json.dumps(line) if as_json else f"{line['service'] or line['container']} | {line['line']}"
    )


def environment_logs(
    client: PortsideClient,
    *,
    name_or_id: str,
    service: str | None,
    tail: int | None,
    follow: bool,
    as_json: bool,
) -> None:
    """``portside logs --env NAME [-f]``: the recent lines, then (with -f) new ones."""
    from controlplane.client import LogLine

    environment = resolve_environment(client, name_or_id)
    params = {"tail": tail, "service": service}
    recent = client.environment_logs(
        environment["id"], {k: v for k, v in params.items() if v is not None}
    )
    for line in recent["lines"]:
        print(_env_line(line, as_json), flush=True)
    if not follow:
        return
    for event in client.follow_environment_logs(environment["id"], service):
        if isinstance(event, LogLine):
            print(_env_line(json.loads(event.text), as_json), flush=True)
    print(f"portside: environment {environment['name']} was removed", file=sys.stderr)


def build_log(client: PortsideClient, build_id: int, as_json: bool) -> None:
    """The log of a build so far, and a word on stderr if it goes on."""
    logs = client.logs(build_id)
    if as_json:
        print_json(logs)
        return
    for line in logs["lines"]:
        print(line)
    if not logs["complete"]:
        print(f"portside: build {build_id} is {logs['status']}; follow it with -f", file=sys.stderr)


def follow_build(client: PortsideClient, build_id: int, quiet_after: float, as_json: bool) -> None:
    """The log of a build until it ends, saying what it does when it is quiet."""
    from controlplane.client import LogLine, Quiet

    client.build(build_id)  # a missing build is a 404 here, before streaming
    progress = Progress(sys.stderr)
    for event in client.follow_logs(build_id, quiet_after=quiet_after):
        if isinstance(event, Quiet):
            progress.show(f"... still {activity(client, build_id)} ({int(event.seconds)} s)")
        elif isinstance(event, LogLine):
            progress.clear()
            print(json.dumps({"line": event.text}) if as_json else event.text, flush=True)
    progress.clear()
    build = client.build(build_id)
    ending = f"build {build['id']} {build['status']}"
    if build.get("error"):
        ending += f": {shorten(build['error'], 200)}"
    print(f"portside: {ending}", file=sys.stderr)


@click.command(help="a build's log, or an environment's output", epilog=API_EPILOG)
@click.argument("build", type=int, required=False)
@click.option("--env", help="an environment's runtime output instead (name or id)")
@click.option("--service", help="with --env, a compose service's lines only")
@click.option("--tail", type=int, help="with --env, only the last this many lines")
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="follow the log until the build ends (with --env: until interrupted)",
)
@click.option(
    "--quiet-after",
    type=float,
    default=QUIET_AFTER,
    help="with -f, say what the build does after this many seconds without output",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
def logs(
    *,
    build: int | None,
    env: str | None,
    service: str | None,
    tail: int | None,
    follow: bool,
    quiet_after: float,
    as_json: bool,
) -> None:
    """BUILD: the build's id."""
    client = api_client()
    if (env is None) == (build is None):
        raise CommandError("give a build's id or --env NAME (not both)", EXIT_USAGE)
    if env is not None:
        environment_logs(
            client, name_or_id=env, service=service, tail=tail, follow=follow, as_json=as_json
        )
    elif follow:
        follow_build(client, build or 0, quiet_after, as_json)
    else:
        build_log(client, build or 0, as_json)


COMMANDS = (logs,)
