"""Process commands: the long-running parts of Portside (``web``, ``worker``,
``buildworker``, ``beat``, ``flower``, ``agent``, ``dev``).

``agent`` and ``buildworker`` exec their own packages before any control plane setting,
database or broker is touched: those hosts import no control plane.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from controlplane.cli.common import CommandError, load_settings

if TYPE_CHECKING:
    from controlplane.settings import Settings

DEPLOY_DIR = Path(__file__).resolve().parent.parent.parent / "deploy"
LOGLEVEL = click.option("--loglevel", default="INFO", show_default=False)
CONCURRENCY = click.option("--concurrency", type=int)


def check_redis(settings: Settings) -> None:
    from tasks.process import broker_refusal

    if problem := broker_refusal(settings.redis_url):
        raise CommandError(problem)


def _exec(argv: list[str]) -> NoReturn:
    os.execv(sys.executable, [sys.executable, *argv])


def _celery(settings: Settings, argv: list[str]) -> int:
    check_redis(settings)
    from tasks import worker

    return worker.run(settings, argv)


@click.command(help="serve the control plane with gunicorn")
@click.option("--bind", help="address:port (default from deploy/gunicorn.conf.py)")
def web(bind: str | None) -> None:
    from controlplane.cli.admin import open_database

    open_database(load_settings())
    command = ["-m", "gunicorn", "-c", str(DEPLOY_DIR / "gunicorn.conf.py")]
    command += ["--bind", bind] if bind else []
    _exec([*command, "controlplane.wsgi:app"])


@click.command(help="run a control worker (queue 'control')")
@LOGLEVEL
@CONCURRENCY
def worker(loglevel: str, concurrency: int | None) -> int:
    from controlplane.cli.admin import open_database

    settings = load_settings()
    open_database(settings)
    argv = ["worker", "-Q", "control", "-n", "control@%h", "-E", "-l", loglevel]
    argv += ["-c", str(concurrency)] if concurrency else []
    return _celery(settings, argv)


@click.command(help="run a build worker (queue 'builds' + its own)")
@LOGLEVEL
@CONCURRENCY
@click.option("--name", help="the node name; its direct queue is builds.<name>")
def buildworker(loglevel: str, concurrency: int | None, name: str | None) -> None:
    """The build worker is a deployable of its own (:mod:`buildworker`, which reads its
    own settings and imports no control plane): exec it with the same options."""
    options = ["--loglevel", loglevel]
    options += ["--concurrency", str(concurrency)] if concurrency else []
    options += ["--name", name] if name else []
    _exec(["-m", "buildworker", *options])


@click.command(help="run the periodic scheduler")
@LOGLEVEL
@CONCURRENCY
def beat(loglevel: str, concurrency: int | None) -> int:
    settings = load_settings()
    schedule = settings.data_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    return _celery(settings, ["beat", "-l", loglevel, "-s", str(schedule)])


@click.command(help="run Flower on the same broker")
@click.option("--address", default="127.0.0.1")
@click.option("--port", type=int, default=5555)
def flower(address: str, port: int) -> int:
    return _celery(load_settings(), ["flower", f"--address={address}", f"--port={port}"])


@click.command(help="run the host agent")
def agent() -> None:
    """The host agent is a package of its own (no Flask, database or control plane
    settings): exec it."""
    _exec(["-m", "hostagent"])


@click.command(help="run everything on one machine (SQLite + local Redis)")
@click.option("--bind", help="address:port (default PORTSIDE_DEV_BIND, else 127.0.0.1:8000)")
def dev(bind: str | None) -> int:
    """Everything on one machine (:mod:`controlplane.devmode`)."""
    from controlplane import devmode
    from controlplane.cli.admin import open_database

    settings = load_settings(dev=True)
    check_redis(settings)
    database = open_database(settings, migrated=False)
    return devmode.run(settings, database, devmode.bind_address(os.environ, bind))


COMMANDS = (web, worker, buildworker, beat, flower, agent, dev)
