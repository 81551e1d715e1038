"""``python -m bench cli``: how long the ``portside`` command takes to start.

Issue 20's bars: ``portside --help`` under 0.3 s, an API command (``portside builds list``)
under 0.5 s. Each is run ``--runs`` times as a real process, alternating with the
baseline of the same run, ``python -c pass`` with the same interpreter, so the table
shows the median wall time and its ratio to an empty interpreter on this machine. The API
command talks to a port that refuses at once: what is measured is its start-up (imports,
settings, parsing) and one refused connection, not a server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import Figure, free_port, render_figures

PORTSIDE = Path(sys.executable).with_name("portside")


@dataclass(frozen=True)
class Command:
    """One measured command line and the start-up it must stay under (seconds)."""

    name: str
    argv: tuple[str, ...]
    target: float


COMMANDS = (
    Command("`portside --help` start-up", ("--help",), 0.3),
    Command("`portside builds list` start-up (API command)", ("builds", "list"), 0.5),
)


def wall_time(argv: Sequence[str], env: dict[str, str]) -> float:
    """Seconds from spawning ``argv`` to its exit."""
    began = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=False, timeout=60)
    return time.perf_counter() - began


def measure(runs: int) -> tuple[float, dict[str, float]]:
    """Median wall times: the baseline's and each command's, interleaved run by run so a
    busy moment of the machine weighs on both alike."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTSIDE_")}
    env |= {"PORTSIDE_URL": f"http://127.0.0.1:{free_port()}", "PORTSIDE_TOKEN": "ps_bench_x"}
    baseline: list[float] = []
    times: dict[str, list[float]] = {command.name: [] for command in COMMANDS}
    for _ in range(runs):
        baseline.append(wall_time([sys.executable, "-c", "pass"], env))
        for command in COMMANDS:
            times[command.name].append(wall_time([str(PORTSIDE), *command.argv], env))
    return statistics.median(baseline), {
        name: statistics.median(values) for name, values in times.items()
    }


def figures(baseline: float, medians: dict[str, float]) -> list[Figure]:
    found = [Figure("`python -c pass` start-up (baseline)", f"{baseline:.3f} s", "-", None)]
    for command in COMMANDS:
        seconds = medians[command.name]
        found.append(
            Figure(
                command.name,
                f"{seconds:.3f} s = {seconds / baseline:.1f} x baseline",
                f"< {command.target} s",
                seconds < command.target,
            )
        )
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench cli", description="Start-up time of the portside command."
    )
    parser.add_argument("--runs", type=int, default=15, help="runs of each command")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be positive")
    return args


def run(argv: Sequence[str] | None = None) -> tuple[int, list[Figure]]:
    """Run, print the table; return the exit status and the figures for the final table."""
    args = parse_args(argv)
    baseline, medians = measure(args.runs)
    found = figures(baseline, medians)
    for line in render_figures(found):
        print(line)
    return (0 if all(f.met is not False for f in found) else 1), found


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
