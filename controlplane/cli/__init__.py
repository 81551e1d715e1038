"""The ``portside`` command: process entry points, admin commands and an API client.

Settings are read once per command and handed down. Every failure a person can fix (a bad
setting, a database or Redis that does not answer) ends in one line on stderr and a
non-zero exit code: 2 for bad usage or settings, 1 for an unavailable dependency.

Three kinds of commands, one module (or two) each: process commands
(:mod:`.processes`), admin commands on the database (:mod:`.admin`), and the commands of
everyday use that talk to a running control plane over HTTP at ``PORTSIDE_URL`` with
``PORTSIDE_TOKEN`` (:mod:`.services`, :mod:`.api`, :mod:`.environments`, :mod:`.logs`,
through :mod:`controlplane.client`). A command imports what it needs when it runs, so
``portside --help`` and the API commands start without SQLAlchemy, Alembic, Flask, docker
or Celery; ``portside agent`` and ``portside buildworker`` exec their own packages, which
import no control plane.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from controlplane.cli import admin, api, environments, logs, processes, services
from controlplane.cli.common import EXIT_USAGE, CommandError, failure


@click.group(
    "portside",
    help="The portside command: process entry points, admin commands and an API client.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def portside() -> None:
    pass


for module in (processes, admin, services, api, environments, logs):
    for command in module.COMMANDS:
        portside.add_command(command)


def _usage_message(exc: click.UsageError) -> str:
    """Click's complaint in argparse's words, which scripts and tests already know."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return "the following arguments are required: COMMAND"
    if isinstance(exc, click.MissingParameter) and exc.param is not None:
        param = exc.param
        name = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
        return f"the following arguments are required: {name.lower() if name.isupper() else name}"
    return exc.format_message()


def usage_error(exc: click.UsageError) -> int:
    """argparse's two lines: the usage of the command, then what was wrong with it."""
    path = exc.ctx.command_path if exc.ctx else "portside"
    if exc.ctx is not None:
        usage = exc.ctx.get_usage().removeprefix("Usage: ")
        print(f"usage: {usage}", file=sys.stderr)
    print(f"{path}: error: {_usage_message(exc)}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with portside.make_context("portside", args) as context:
            result = portside.invoke(context)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:  # --help
        return exc.exit_code
    except click.UsageError as exc:
        return usage_error(exc)
    except CommandError as exc:
        print(f"portside: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # imported here: `portside agent` loads no more than it needs
        from controlplane.errors import PortsideError

        if isinstance(exc, PortsideError):
            return failure(exc)
        raise
