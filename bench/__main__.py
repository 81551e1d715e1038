"""``python -m bench [webhooks|pipeline|agents|storm|queue|cli|all] [options]``: benchmarks.

- ``webhooks``: the webhook intake against a bare Flask app (bench/webhooks.py);
- ``pipeline``: push to recorded deployment against a shell script (bench/pipeline.py);
- ``agents``: the desired-state 304 path (also from outside with wrk against a bare 204
  on sync workers), its growth with the database, 2,000 agents long-polling one web
  node and a deployment to 1,000 of their hosts (bench/agents.py);
- ``storm``: 1,000 signed pushes through the intake and a real control worker
  (bench/storm.py);
- ``queue``: 100 queued preview builds of 4 services drained by 2 build workers
  (bench/buildqueue.py);
- ``cli``: the ``portside`` command's start-up against ``python -c pass`` (bench/cli.py).

Without a name every benchmark runs, one after the other, each with its defaults, and
one final table lists every figure against its target; the exit status is the worst of
theirs. Options are those of the named benchmark (``python -m bench pipeline --help``).
Options without a name are the webhook benchmark's, as before (``python -m bench
--requests 500`` runs the webhook intake).

Every benchmark uses Redis database 10 (``PORTSIDE_BENCH_REDIS_DB`` to change it; never
the test suite's) and PostgreSQL databases of its own, made and dropped by the run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from bench import agents, buildqueue, cli, pipeline, storm, webhooks
from bench.common import Figure, broken, render_figures

Runner = Callable[[Sequence[str] | None], tuple[int, list[Figure]]]

BENCHMARKS: dict[str, Runner] = {
    "webhooks": webhooks.run,
    "pipeline": pipeline.run,
    "agents": agents.run,
    "storm": storm.run,
    "queue": buildqueue.run,
    "cli": cli.run,
}


def run_all() -> int:
    """Every benchmark with its defaults; a crash of one is a broken figure, not the end."""
    status = 0
    figures: list[Figure] = []
    began = time.monotonic()
    for name, run in BENCHMARKS.items():
        print(f"\n===== {name} =====\n", flush=True)
        try:
            code, found = run([])
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"{name}: crashed: {type(exc).__name__}: {exc}", flush=True)
            code, found = 1, [broken(f"{name}: the benchmark ran", "it runs")]
        status = max(status, code)
        figures += found
    print(f"\n===== all figures ({(time.monotonic() - began) / 60:.1f} min) =====\n")
    for line in render_figures(figures):
        print(line)
    return status


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] in BENCHMARKS:
        return BENCHMARKS[argv[0]](list(argv[1:]))[0]
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv and argv[0] != "all":
        return webhooks.main(list(argv))  # the options of the webhook benchmark, as before
    if len(argv) > 1:
        print("'all' takes no options; name one benchmark to pass it options", file=sys.stderr)
        return 2
    return run_all()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
