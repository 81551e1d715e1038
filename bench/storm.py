"""The webhook storm: many signed pushes at once, taken in and processed by the real parts.

One run, on this machine, against 127.0.0.1 only:

1. the baseline: ``bench.bare_app`` (Flask, read the body, 204) under gunicorn's plain
   sync workers, one per core (the best plain configuration, as in the webhook bench's
   stricter view), sent the same deliveries (warm-up, then the measured run);
2. Portside as it runs for real (bench/stack.py): ``controlplane.wsgi:app`` under the same
   config, a ``portside worker`` with the concurrency ``portside dev`` gives it, the test
   GitHub server with the App installed on one repository, a host, a service tracking
   ``main``; no build worker, so the builds wait in the ``builds`` queue;
3. an untimed warm-up of pushes to an untracked branch (processed, ignored), then the
   storm: ``--deliveries`` pushes to ``main``, each of a commit of its own, from
   ``--concurrency`` sender processes of the lean load client while the control worker
   is already processing them;
4. the checks, from the database: every delivery persisted once; every one processed
   exactly once (one attempt) and each having started exactly one build of its own commit;
5. the figures: intake throughput as a ratio to the bare endpoint, intake latency, and the
   time from the first POST until the last delivery's build was handed to the queue.

The commits are not in the test GitHub server (1,000 real commits take longer than the
storm): the control worker's GitHub feedback for them is refused (422) and logged, which
costs about what a real status call costs. Every push carries the same ``pushed_at`` (a
storm lands within one of GitHub's one-second stamps), so none is skipped as stale.

Exit status: 0 when the run worked (even if a target is missed), 1 when it broke.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.common import (
    Figure,
    LoadResult,
    Server,
    broken,
    build_request,
    process_cpu_seconds,
    render_figures,
    run_load,
)
from bench.pipeline import BRANCH, INSTALLATION, WEBHOOK_SECRET, BenchError, GitHubSide
from bench.stack import Stack, portside_stack
from bench.webhooks import delivery_headers
from controlplane.models import Build, OutboxMessage, WebhookDelivery

TARGET_RATIO = 0.35  # issue 20: of bare under sync workers, the control worker busy beside
TARGET_P99_MS = 30.0
TARGET_DRAIN_S = 60.0  # ours: a 1,000-push storm queued within a minute
WARMUP_BRANCH = "warm-up"


@dataclass(frozen=True)
class Storm:
    guids: list[str]
    shas: dict[str, str]  # guid -> the commit its push names
    requests: list[bytes]


def push_body(github: GitHubSide, template: dict[str, Any], sha: str, branch: str) -> bytes:
    payload = copy.deepcopy(template)
    payload["ref"] = f"refs/heads/{branch}"
    payload["after"] = sha
    payload["head_commit"]["id"] = sha
    return json.dumps(payload).encode()


def make_storm(github: GitHubSide, port: int, count: int, branch: str) -> Storm:
    """``count`` signed pushes, each naming a commit of its own, built before the clock."""
    template = github.push_payload("0" * 40, int(time.time()))
    template["installation"]["id"] = INSTALLATION
    guids: list[str] = []
    shas: dict[str, str] = {}
    requests: list[bytes] = []
    for _ in range(count):
        guid, sha = str(uuid.uuid4()), secrets.token_hex(20)
        body = push_body(github, template, sha, branch)
        headers = delivery_headers("push", body, guid, WEBHOOK_SECRET)
        requests.append(build_request(port, "/webhooks/github", headers, body))
        guids.append(guid)
        shas[guid] = sha
    return Storm(guids, shas, requests)


@dataclass
class StormResult:
    deliveries: int = 0
    bare: LoadResult | None = None
    portside: LoadResult | None = None
    persisted: int = 0
    processed_once: int = 0
    builds: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    drain_s: float | None = None
    processed_s: float | None = None
    peak_backlog: int = 0
    worker_cpu_ms: float | None = None
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def storm_rows(stack: Stack, guids: Sequence[str]) -> list[Any]:
    with stack.database.session_scope() as session:
        return list(
            session.execute(
                select(
                    WebhookDelivery.id,
                    WebhookDelivery.guid,
                    WebhookDelivery.status,
                    WebhookDelivery.attempts,
                    WebhookDelivery.processed_at,
                ).where(WebhookDelivery.guid.in_(guids))
            ).all()
        )


def storm_builds(stack: Stack, delivery_ids: Sequence[int]) -> list[Any]:
    with stack.database.session_scope() as session:
        return list(
            session.execute(
                select(Build.delivery_id, Build.commit_sha, Build.status).where(
                    Build.delivery_id.in_(delivery_ids)
                )
            ).all()
        )


def pending(stack: Stack, guids: Sequence[str]) -> int:
    """Deliveries of the storm not processed yet, and outbox rows (their builds' effects)
    not yet relayed."""
    with stack.database.session_scope() as session:
        unprocessed = session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.guid.in_(guids), WebhookDelivery.processed_at.is_(None))
        )
        unsent = session.scalar(select(func.count()).select_from(OutboxMessage))
    return int(unprocessed or 0) + int(unsent or 0)


def check(stack: Stack, storm: Storm, result: StormResult) -> None:
    """Persisted once, processed once, one build each, of the commit its push named."""
    rows = storm_rows(stack, storm.guids)
    result.persisted = len({row.guid for row in rows})
    if len(rows) == len(storm.guids) == result.persisted:
        result.checks.append(f"{len(rows)} delivery rows, one per GUID sent")
    else:
        result.problems.append(
            f"{len(rows)} rows ({result.persisted} GUIDs) for {len(storm.guids)}"
        )
    result.statuses = dict(sorted(Counter(row.status for row in rows).items()))
    by_id = {row.id: row for row in rows}
    builds = storm_builds(stack, list(by_id))
    result.builds = len(builds)
    per_delivery: dict[int, list[Any]] = {}
    for build in builds:
        per_delivery.setdefault(build.delivery_id, []).append(build)
    once = 0
    for delivery_id, row in by_id.items():
        made = per_delivery.get(delivery_id, [])
        if (
            row.status == "processed"
            and row.attempts == 1
            and len(made) == 1
            and made[0].commit_sha == storm.shas[row.guid]
        ):
            once += 1
    result.processed_once = once
    if once == len(storm.guids):
        result.checks.append(
            f"{once} deliveries processed in one attempt, each with exactly one build of its "
            "commit, queued with it"
        )
    else:
        attempts = Counter(row.attempts for row in rows)
        result.problems.append(
            f"only {once} of {len(storm.guids)} processed exactly once with one build: "
            f"statuses {result.statuses}, attempts {dict(attempts)}, {len(builds)} builds"
        )


def run_bare(stack: Stack, github: GitHubSide, args: argparse.Namespace) -> LoadResult:
    """The same pushes, warm-up first, to the bare Flask endpoint under sync workers."""
    cores = os.cpu_count() or 1
    bare = Server("bare", "bench.bare_app:app", stack.env, stack.work_dir / "bare.log", cores)
    try:
        bare.start()
        warm = make_storm(github, bare.port, args.warmup, WARMUP_BRANCH)
        run_load(bare.port, warm.requests, args.concurrency, args.time_limit)
        storm = make_storm(github, bare.port, args.deliveries, BRANCH)
        return run_load(bare.port, storm.requests, args.concurrency, args.time_limit)
    finally:
        bare.stop()


def benchmark(args: argparse.Namespace, work_dir: Path) -> StormResult:
    result = StormResult(deliveries=args.deliveries)
    with portside_stack(work_dir, "portside_bench_storm_") as stack:
        try:
            github = stack.repository(f"storm-{secrets.token_hex(3)}")
            worker = stack.control_worker()
            stack.install([github])
            stack.host("storm-1")
            stack.service("storm-app", github, "storm-1")
            result.bare = run_bare(stack, github, args)
            port = stack.server.port
            warm = make_storm(github, port, args.warmup, WARMUP_BRANCH)
            run_load(port, warm.requests, args.concurrency, args.time_limit)
            deadline = time.monotonic() + args.drain_timeout
            while pending(stack, warm.guids) and time.monotonic() < deadline:
                time.sleep(0.2)
            storm = make_storm(github, port, args.deliveries, BRANCH)
            pids = stack.pids(worker)
            cpu_before = sum(process_cpu_seconds(pid) for pid in pids)
            began = time.time()
            result.portside = run_load(port, storm.requests, args.concurrency, args.time_limit)
            deadline = time.monotonic() + args.drain_timeout
            while (left := pending(stack, storm.guids)) and time.monotonic() < deadline:
                result.peak_backlog = max(result.peak_backlog, left)
                time.sleep(0.1)
            result.worker_cpu_ms = (
                (sum(process_cpu_seconds(pid) for pid in pids) - cpu_before)
                * 1000
                / max(args.deliveries, 1)
            )
            if left:
                result.problems.append(
                    f"{left} deliveries or builds still pending after {args.drain_timeout:.0f}s"
                )
            check(stack, storm, result)
            rows = storm_rows(stack, storm.guids)
            processed = [ts(row.processed_at) for row in rows if row.processed_at is not None]
            if processed:
                result.processed_s = max(processed) - began
            if processed and not left:  # a build is queued in its delivery's transaction
                result.drain_s = max(processed) - began
            load = result.portside
            wrong = {code: n for code, n in load.statuses.items() if code != 202}
            if wrong or load.errors or load.answered != load.sent:
                result.problems.append(
                    f"intake: answers other than 202 {wrong}, {load.sent - load.answered} "
                    f"unanswered, errors {load.errors[:5]}"
                )
        except BenchError as exc:
            result.problems.append(str(exc))
            result.problems += stack.log_tails()
        except Exception as exc:
            result.problems.append(f"{type(exc).__name__}: {exc}")
            result.problems += stack.log_tails()
    return result


def ts(moment: dt.datetime) -> float:
    """A naive UTC timestamp from the database as seconds since the epoch."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return float(moment.timestamp())


# ------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------


def figures(result: StormResult, args: argparse.Namespace) -> list[Figure]:
    n = result.deliveries
    names = {
        "persisted": f"storm: deliveries persisted ({args.concurrency} senders)",
        "once": "storm: processed exactly once, one build each",
        "ratio": "storm: intake Portside/bare sync throughput (worker busy)",
        "p99": "storm: intake p99 latency (worker busy)",
        "drain": f"storm: first POST -> last of {n} builds queued",
    }
    targets = {
        "persisted": f"{n}/{n}",
        "once": f"{n}/{n}",
        "ratio": f">= {TARGET_RATIO}",
        "p99": f"< {TARGET_P99_MS:.0f} ms",
        "drain": f"<= {TARGET_DRAIN_S:.0f} s (ours)",
    }
    if result.portside is None or result.bare is None:
        return [broken(names[key], targets[key]) for key in names]
    ratio = result.portside.requests_per_second / result.bare.requests_per_second
    p99 = result.portside.percentile(99)
    drain = (
        broken(names["drain"], targets["drain"])
        if result.drain_s is None
        else Figure(
            names["drain"],
            f"{result.drain_s:.1f} s ({n / result.drain_s:.0f}/s)",
            targets["drain"],
            result.drain_s <= TARGET_DRAIN_S,
        )
    )
    return [
        Figure(
            names["persisted"],
            f"{result.persisted}/{n}",
            targets["persisted"],
            result.persisted == n,
        ),
        Figure(
            names["once"],
            f"{result.processed_once}/{n}",
            targets["once"],
            result.processed_once == n,
        ),
        Figure(
            names["ratio"],
            f"{ratio:.3f} ({result.portside.requests_per_second:.0f} / "
            f"{result.bare.requests_per_second:.0f} req/s)",
            targets["ratio"],
            ratio >= TARGET_RATIO,
        ),
        Figure(names["p99"], f"{p99:.1f} ms", targets["p99"], p99 < TARGET_P99_MS),
        drain,
    ]


def report(result: StormResult, args: argparse.Namespace) -> bool:
    ok = not result.problems and result.portside is not None
    print(
        f"Webhook storm: {args.deliveries} signed pushes from {args.concurrency} senders, "
        f"warm-up {args.warmup}; the control worker processes them as they arrive"
    )
    print()
    for name, load in (("bare", result.bare), ("portside", result.portside)):
        if load is not None:
            print(
                f"  {name:<9} {load.answered:>5} answered in {load.elapsed:6.2f} s: "
                f"{load.requests_per_second:7.1f} req/s, p50 {load.percentile(50):.1f} ms, "
                f"p99 {load.percentile(99):.1f} ms, max {load.percentile(100):.1f} ms"
            )
    if result.processed_s is not None:
        print(f"  last delivery processed {result.processed_s:.1f} s after the first POST")
    if result.drain_s is not None:
        print(f"  last build queued (with its delivery) {result.drain_s:.1f} s after it")
    if result.worker_cpu_ms is not None:
        print(
            f"  control worker CPU: {result.worker_cpu_ms:.1f} ms per delivery; peak backlog "
            f"{result.peak_backlog} (unprocessed deliveries + unsent outbox rows, sampled)"
        )
    print(f"  delivery statuses: {result.statuses}; builds made: {result.builds}")
    for line in result.checks:
        print(f"check: ok: {line}")
    for problem in result.problems:
        print(f"FAILED: {problem}")
    print()
    for line in render_figures(figures(result, args)):
        print(line)
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench storm",
        description="A storm of signed pushes through the intake and the control worker.",
    )
    parser.add_argument("--deliveries", type=int, default=1000, help="pushes in the storm")
    parser.add_argument("--warmup", type=int, default=100, help="untimed pushes first")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent senders")
    parser.add_argument(
        "--time-limit", type=float, default=120.0, help="seconds allowed per load run"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="seconds allowed for processing"
    )
    parser.add_argument("--keep-dir", type=Path, help="keep logs here (default: temporary)")
    args = parser.parse_args(argv)
    if args.deliveries < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--deliveries and --concurrency must be positive, --warmup not negative")
    return args


@contextlib.contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="portside-bench-storm-") as temp:
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
