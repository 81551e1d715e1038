"""The build queue: a backlog of builds of several services drained by two build workers.

One run, on this machine, against 127.0.0.1 only:

1. Portside as it runs for real (bench/stack.py): web, a control worker, and
   ``--workers`` ``portside buildworker`` processes (concurrency 1 each, as deployed);
   ``--services`` repositories in the test GitHub server, each with a service;
2. ``--per-service`` pull requests per service, each with a head commit of its own, so
   that every one gets a preview environment and a build of its own (pushes to one
   branch would supersede each other). The images are tiny: ``FROM`` the test base image
   plus one small file, the same for every pull request of a service, so after the first
   build of a service the layers come from the engine's cache and the registry has them;
3. the ``pull_request`` ``opened`` deliveries, one service's after the other (the first
   service floods the queue before the next one pushes: the case that needs fairness);
4. when every build has ended: queue latency (build row created -> its clone step
   started), set against what an ideal queue would give — the same builds, their own
   measured durations, the same workers, each free worker taking the oldest build at
   once; how long a worker sat idle between two builds; and fairness between the
   services: Jain's index of the builds each completed in the first half of the run (1:
   equal shares; 1/services: one service had it all) and each service's median
   completion position.

Exit status: 0 when the run worked (even if a target is missed), 1 when it broke.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import heapq
import json
import math
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests
from sqlalchemy import select

from bench.common import Figure, broken, render_figures
from bench.pipeline import (
    INSTALLATION,
    BenchError,
    GitHubSide,
    delete_registry_tags,
    post_delivery,
    remove_images,
)
from bench.stack import Stack, portside_stack
from bench.webhooks import PAYLOADS
from controlplane.models import Build

ENDED = ("succeeded", "failed", "cancelled", "superseded")
TARGET_TURNAROUND_OVER_IDEAL = 1.2  # ours: at most a fifth over a perfect FIFO queue
TARGET_UTILISATION = 0.8  # ours: a backlog keeps the workers in their steps
TARGET_JAIN = 0.9  # ours: no service starved while another's backlog drains


@dataclass
class QueuedBuild:
    """One build as the rows tell it (seconds since the epoch)."""

    service: str
    created: float
    clone_started: float
    finished: float
    work: float  # the steps' own time, without the waits between them
    worker: str
    status: str

    @property
    def latency(self) -> float:
        return self.clone_started - self.created

    @property
    def turnaround(self) -> float:
        return self.finished - self.created


@dataclass
class QueueResult:
    builds: list[QueuedBuild] = field(default_factory=list)
    expected: int = 0
    posted_s: float = 0.0
    drain_s: float | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def ideal_queue(builds: Sequence[QueuedBuild], workers: int) -> list[tuple[float, float]]:
    """(queue latency, turnaround) of each build in a perfect FIFO queue: the oldest build
    starts the moment one of ``workers`` is free and has it to itself for its steps."""
    free = [min(build.created for build in builds)] * workers
    heapq.heapify(free)
    found = []
    for build in sorted(builds, key=lambda b: b.created):
        start = max(build.created, heapq.heappop(free))
        heapq.heappush(free, start + build.work)
        found.append((start - build.created, start + build.work - build.created))
    return found


def in_flight(builds: Sequence[QueuedBuild]) -> int:
    """The most builds one worker had between clone and end at the same time."""
    most = 0
    for worker in {build.worker for build in builds}:
        events = sorted(
            (moment, change)
            for b in builds
            if b.worker == worker
            for moment, change in ((b.clone_started, 1), (b.finished, -1))
        )
        level = 0
        for _moment, change in events:
            level += change
            most = max(most, level)
    return most


def utilisation(builds: Sequence[QueuedBuild], workers: int, drain_s: float) -> float:
    """The share of the workers' time spent in steps while the backlog drained."""
    return sum(build.work for build in builds) / (workers * drain_s) if drain_s else math.nan


def jain(shares: Sequence[float]) -> float:
    """Jain's fairness index: 1 when every share is equal, 1/n when one has everything."""
    total = sum(shares)
    squares = sum(share * share for share in shares)
    return total * total / (len(shares) * squares) if squares else math.nan


def fairness(builds: Sequence[QueuedBuild]) -> tuple[float, dict[str, float]]:
    """Jain's index over the first half of the completions; each service's median
    completion position (1 = first)."""
    services = sorted({build.service for build in builds})
    order = sorted(builds, key=lambda b: b.finished)
    half = order[: len(order) // 2]
    index = jain([sum(b.service == name for b in half) for name in services])
    positions = {
        name: statistics.median(i + 1 for i, b in enumerate(order) if b.service == name)
        for name in services
    }
    return index, positions


# ------------------------------------------------------------------------------------
# The GitHub side
# ------------------------------------------------------------------------------------


def pull_payload(stack: Stack, github: GitHubSide, number: int) -> dict[str, Any]:
    """An ``opened`` delivery of pull request ``number`` as the test server renders it."""
    payload: dict[str, Any] = json.loads(
        (PAYLOADS / "pull_request__opened.payload.json").read_bytes()
    )
    token = stack.github.state.issue_token(INSTALLATION).token
    answer = requests.get(
        f"{stack.github.url}/repos/{github.repository}/pulls/{number}",
        headers={"Authorization": f"token {token}"},
        timeout=10,
    )
    answer.raise_for_status()
    payload.update(
        action="opened",
        number=number,
        pull_request=answer.json(),
        repository=stack.github.repository_json(github.repository),
    )
    payload["installation"]["id"] = INSTALLATION
    return payload


def open_pulls(stack: Stack, github: GitHubSide, count: int) -> list[dict[str, Any]]:
    """``count`` pull requests, each with a head commit of its own and the same image."""
    payloads = []
    for number in range(1, count + 1):
        branch = f"feature-{number}"
        stack.github.state.commit(
            github.repository, {"CHANGES.md": f"{branch} {secrets.token_hex(8)}\n"}, branch=branch
        )
        stack.github.state.add_pull_request(github.repository, number, branch)
        payloads.append(pull_payload(stack, github, number))
    return payloads


# ------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------


def ts(moment: dt.datetime | None) -> float:
    if moment is None:
        raise BenchError("a timestamp the figures need was never set")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def build_rows(stack: Stack) -> list[Build]:
    with stack.database.session_scope() as session:
        builds = list(session.scalars(select(Build)))
        for build in builds:
            _ = build.steps, build.service  # loaded before the session closes
        session.expunge_all()
    return builds


def collect(stack: Stack, names: dict[int, str]) -> list[QueuedBuild]:
    found = []
    for build in build_rows(stack):
        steps = {step.name: step for step in build.steps}
        last = max(build.steps, key=lambda step: step.position)
        found.append(
            QueuedBuild(
                service=names[build.service_id],
                created=ts(build.created_at),
                clone_started=ts(steps["clone"].started_at),
                finished=ts(build.finished_at or last.finished_at),
                work=sum(
                    ts(step.finished_at) - ts(step.started_at)
                    for step in build.steps
                    if step.started_at is not None and step.finished_at is not None
                ),
                worker=build.worker or "?",
                status=build.status,
            )
        )
    return found


def benchmark(args: argparse.Namespace, work_dir: Path) -> QueueResult:
    result = QueueResult(expected=args.services * args.per_service)
    suffix = secrets.token_hex(3)
    repositories: list[str] = []
    with portside_stack(work_dir, "portside_bench_queue_") as stack:
        try:
            stack.control_worker()
            sides = [stack.repository(f"queue-{suffix}-{n}") for n in range(args.services)]
            repositories = [side.repository for side in sides]
            stack.install(sides)
            stack.host("queue-1")
            names = {
                stack.service(
                    f"svc-{chr(ord('a') + n)}", side, "queue-1"
                ): f"svc-{chr(ord('a') + n)}"
                for n, side in enumerate(sides)
            }
            deliveries = [open_pulls(stack, side, args.per_service) for side in sides]
            for number in range(args.workers):
                stack.build_worker(f"queue-{suffix}-{number + 1}")
            began = time.time()
            for payloads in deliveries:
                for payload in payloads:
                    post_delivery(stack.server.port, "pull_request", payload)
            result.posted_s = time.time() - began
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                rows = build_rows(stack)
                if len(rows) >= result.expected and all(row.status in ENDED for row in rows):
                    break
                time.sleep(1.0)
            else:
                done = sum(row.status in ENDED for row in build_rows(stack))
                raise BenchError(
                    f"{done} of {result.expected} builds ended within {args.timeout:.0f}s"
                )
            result.builds = collect(stack, names)
            result.drain_s = max(build.finished for build in result.builds) - began
            failed = [build for build in build_rows(stack) if build.status != "succeeded"]
            if failed:
                why = Counter(
                    f"{build.failed_step}: {(build.error or '')[:90]}" for build in failed
                ).most_common(5)
                result.problems.append(
                    f"{len(failed)} builds did not succeed; the commonest reasons: {why}"
                )
        except Exception as exc:
            result.problems.append(f"{type(exc).__name__}: {exc}")
            result.problems += stack.log_tails()
        finally:
            client = docker.from_env(timeout=120)
            registry = stack.settings.registry
            removed = remove_images(client, [f"{registry}/{repo}" for repo in repositories])
            deleted = delete_registry_tags(registry, repositories)
            client.close()
            result.notes.append(
                f"clean-up: {removed} local images, {deleted} registry manifests removed"
            )
    return result


# ------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Marks:
    """What the figures are made of."""

    latency: tuple[float, float]  # p50, p95 (s)
    ideal_latency: tuple[float, float]
    turnaround: tuple[float, float]
    ideal_turnaround: tuple[float, float]
    in_flight: int
    utilisation: float
    jain: float
    positions: dict[str, float]
    work_p50: float

    @property
    def turnaround_over_ideal(self) -> tuple[float, float]:
        """p50 and p95 of the turnaround, each over the ideal queue's."""
        return (
            self.turnaround[0] / max(self.ideal_turnaround[0], 1e-3),
            self.turnaround[1] / max(self.ideal_turnaround[1], 1e-3),
        )


def marks(result: QueueResult, workers: int) -> Marks:
    builds = result.builds
    ideal = ideal_queue(builds, workers)

    def p50_p95(values: Sequence[float]) -> tuple[float, float]:
        return percentile(values, 50), percentile(values, 95)

    index, positions = fairness(builds)
    return Marks(
        latency=p50_p95([b.latency for b in builds]),
        ideal_latency=p50_p95([wait for wait, _ in ideal]),
        turnaround=p50_p95([b.turnaround for b in builds]),
        ideal_turnaround=p50_p95([total for _, total in ideal]),
        in_flight=in_flight(builds),
        utilisation=utilisation(builds, workers, result.drain_s or 0.0),
        jain=index,
        positions=positions,
        work_p50=statistics.median(b.work for b in builds),
    )


def figures(result: QueueResult, args: argparse.Namespace) -> list[Figure]:
    n = result.expected
    names = {
        "done": (
            f"queue: builds succeeded ({args.services} services, {args.workers} workers)",
            f"{n}/{n}",
        ),
        "latency": ("queue: latency p50 / p95 (created -> clone)", "none: see the next line"),
        "turnaround": (
            "queue: created -> end p50, p95 / an ideal FIFO's",
            f"both <= {TARGET_TURNAROUND_OVER_IDEAL} (ours)",
        ),
        "in_flight": ("queue: builds in flight on one worker (max)", "1 (ours: concurrency 1)"),
        "utilisation": (
            "queue: workers' time in steps while draining",
            f">= {TARGET_UTILISATION} (ours)",
        ),
        "jain": ("queue: Jain's index, first half of the run", f">= {TARGET_JAIN} (ours)"),
    }
    if not result.builds:
        return [broken(*names[key]) for key in names]
    m = marks(result, args.workers)
    succeeded = sum(build.status == "succeeded" for build in result.builds)
    over = m.turnaround_over_ideal
    spread = max(m.positions.values()) - min(m.positions.values())
    return [
        Figure(
            names["done"][0],
            f"{succeeded}/{n} in {result.drain_s or 0:.0f} s",
            names["done"][1],
            succeeded == n,
        ),
        Figure(
            names["latency"][0],
            f"{m.latency[0]:.1f} s / {m.latency[1]:.1f} s "
            f"(ideal {m.ideal_latency[0]:.1f} / {m.ideal_latency[1]:.1f})",
            names["latency"][1],
            None,
        ),
        Figure(
            names["turnaround"][0],
            f"{over[0]:.2f}, {over[1]:.2f} ({m.turnaround[0]:.0f} s, {m.turnaround[1]:.0f} s)",
            names["turnaround"][1],
            max(over) <= TARGET_TURNAROUND_OVER_IDEAL,
        ),
        Figure(names["in_flight"][0], f"{m.in_flight}", names["in_flight"][1], m.in_flight <= 1),
        Figure(
            names["utilisation"][0],
            f"{m.utilisation:.2f}",
            names["utilisation"][1],
            m.utilisation >= TARGET_UTILISATION,
        ),
        Figure(
            names["jain"][0],
            f"{m.jain:.2f} (median positions spread {spread:.0f})",
            names["jain"][1],
            m.jain >= TARGET_JAIN,
        ),
    ]


def report(result: QueueResult, args: argparse.Namespace) -> bool:
    ok = not result.problems and len(result.builds) == result.expected
    print(
        f"Build queue: {args.services} services x {args.per_service} pull requests, "
        f"{args.workers} build workers (concurrency 1); deliveries posted one service "
        f"after the other in {result.posted_s:.1f} s"
    )
    if result.builds:
        m = marks(result, args.workers)
        drain = result.drain_s or math.nan
        print(
            f"  drained in {drain:.1f} s ({len(result.builds) / drain * 60:.1f} builds/min); "
            f"one build's steps take p50 {m.work_p50:.2f} s; the workers spent "
            f"{m.utilisation:.0%} of their time in steps"
        )
        for label, real, ideal in (
            ("queue latency (created -> clone)", m.latency, m.ideal_latency),
            ("turnaround (created -> end)", m.turnaround, m.ideal_turnaround),
        ):
            print(
                f"  {label}: p50 {real[0]:.1f} s, p95 {real[1]:.1f} s; an ideal FIFO queue "
                f"on the same workers: p50 {ideal[0]:.1f} s, p95 {ideal[1]:.1f} s"
            )
        by_worker = {
            worker: sum(b.worker == worker for b in result.builds)
            for worker in sorted({b.worker for b in result.builds})
        }
        print(
            f"  builds per worker {by_worker}; at most {m.in_flight} builds in flight "
            "(cloned, not ended) on one worker"
        )
        print(
            f"  fairness: Jain's index over the first half {m.jain:.3f}; median completion "
            f"position by service {m.positions}"
        )
    for note in result.notes:
        print(f"note: {note}")
    for problem in result.problems:
        print(f"FAILED: {problem}")
    print()
    for line in render_figures(figures(result, args)):
        print(line)
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench queue",
        description="A backlog of builds of several services drained by the build workers.",
    )
    parser.add_argument("--services", type=int, default=4, help="services (repositories)")
    parser.add_argument("--per-service", type=int, default=25, help="pull requests per service")
    parser.add_argument("--workers", type=int, default=2, help="build worker processes")
    parser.add_argument(
        "--timeout", type=float, default=360.0, help="seconds allowed for the backlog to drain"
    )
    parser.add_argument("--keep-dir", type=Path, help="keep logs here (default: temporary)")
    args = parser.parse_args(argv)
    if args.services < 1 or args.per_service < 1 or args.workers < 1:
        parser.error("--services, --per-service and --workers must be positive")
    return args


@contextlib.contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="portside-bench-queue-") as temp:
        yield Path(temp)


def run(argv: Sequence[str] | None = None) -> tuple[int, list[Figure]]:
    """Run, print the report; return the exit status and the figures for the final table."""
    args = parse_args(argv)
    with work_directory(args.keep_dir) as work_dir:
        result = benchmark(args, work_dir)
        ok = report(result, args)
    return (0 if ok else 1), figures(result, args)


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
