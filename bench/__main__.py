"""``python -m bench [webhooks|pipeline|agents|all] [options]``: Portside's benchmarks.

- ``webhooks``: the webhook intake against a bare Flask app (bench/webhooks.py);
- ``pipeline``: push to recorded deployment against a shell script (bench/pipeline.py);
- ``agents``: the desired-state 304 path, its growth with the database, long polls
  (bench/agents.py).

Without a name every benchmark runs, one after the other, each with its defaults; the
exit status is the worst of theirs. Options are those of the named benchmark
(``python -m bench pipeline --help``). Options without a name are the webhook
benchmark's, as before (``python -m bench --requests 500`` runs the webhook intake).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from bench import agents, pipeline, webhooks

BENCHMARKS: dict[str, Callable[[Sequence[str] | None], int]] = {
    "webhooks": webhooks.main,
    "pipeline": pipeline.main,
    "agents": agents.main,
}


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] in BENCHMARKS:
        return BENCHMARKS[argv[0]](list(argv[1:]))
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv and argv[0] != "all":
        return webhooks.main(list(argv))  # the options of the webhook benchmark, as before
    if len(argv) > 1:
        print("'all' takes no options; name one benchmark to pass it options", file=sys.stderr)
        return 2
    status = 0
    for name, run in BENCHMARKS.items():
        print(f"\n===== {name} =====\n", flush=True)
        status = max(status, run([]))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
