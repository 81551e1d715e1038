"""``portside-buildworker`` (also ``python -m buildworker`` and ``portside buildworker``):
a build host's Celery worker. It reads the build worker's own settings and registers the
build tasks only, so a build host loads no control plane, Flask or SQLAlchemy.

Failures a person can fix end in one line on stderr, as the ``portside`` command's do:
exit 2 for bad settings, 1 for a Docker engine or Redis that does not answer.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from buildworker.settings import BuildWorkerSettings
from contracts.environ import SettingError, UntrustedMode
from contracts.urls import url_refusal
from tasks import process
from tasks.app import BUILDS_QUEUE, UNTRUSTED_BUILDS_QUEUE, configure, node_queue

EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2


def build_queues(node_name: str, untrusted: UntrustedMode = "no") -> list[str]:
    """A build worker takes first steps from the shared queues, later ones from its own;
    its own comes first, and the broker is told to keep that order (tasks.app), so a
    worker finishes the build it started before it takes the next one.

    Which shared queues follow ``untrusted`` (PORTSIDE_BUILD_UNTRUSTED): ``no`` reads
    trusted builds only, ``only`` forks' builds only, ``yes`` both.
    """
    shared = {
        "no": [BUILDS_QUEUE],
        "only": [UNTRUSTED_BUILDS_QUEUE],
        "yes": [BUILDS_QUEUE, UNTRUSTED_BUILDS_QUEUE],
    }
    if untrusted not in shared:
        raise ValueError(f"PORTSIDE_BUILD_UNTRUSTED must be no, only or yes, got {untrusted!r}")
    return [node_queue(node_name), *shared[untrusted]]


def parser() -> argparse.ArgumentParser:
    """The options ``portside buildworker`` passes on unchanged."""
    parsed = argparse.ArgumentParser(
        prog="portside-buildworker", description="run a build worker (queue 'builds' + its own)"
    )
    parsed.add_argument("--loglevel", default="INFO")
    parsed.add_argument("--concurrency", type=int)
    parsed.add_argument("--name", help="the node name; its direct queue is builds.<name>")
    return parsed


def _refusal(settings: BuildWorkerSettings) -> tuple[str, int] | None:
    """Why this host cannot run a build worker (one line and the exit status), or None."""
    if refusal := url_refusal(settings.url, allow_insecure=settings.allow_insecure_url):
        return refusal, EXIT_USAGE
    if not process.docker_engine_answers():
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return (
            f"no Docker engine answers at {where}: a build worker needs one (set DOCKER_HOST)",
            EXIT_UNAVAILABLE,
        )
    if problem := process.broker_refusal(settings.redis_url):
        return problem, EXIT_UNAVAILABLE
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = BuildWorkerSettings.from_env(os.environ)
    except SettingError as exc:
        print(f"portside: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if refused := _refusal(settings):
        message, status = refused
        print(f"portside: {message}", file=sys.stderr)
        return status
    name = args.name or f"build-{os.uname().nodename}-{os.getpid()}"
    queues = ",".join(build_queues(name, settings.build_untrusted))
    celery_argv = ["worker", "-Q", queues, "-n", f"{name}@%h", "-E", "-l", args.loglevel]
    celery_argv += ["-c", str(args.concurrency or 2)]
    app = configure(settings)
    import tasks.build  # noqa: F401 - importing registers the build tasks, and only them

    return process.run(app, celery_argv)


if __name__ == "__main__":
    sys.exit(main())
