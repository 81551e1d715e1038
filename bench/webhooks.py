"""The webhook-intake benchmark: ``POST /webhooks/github`` of the real control plane.

One run, on this machine, against 127.0.0.1 only:

1. a PostgreSQL database of its own (migrated, dropped at the end) and Redis db 10
   (flushed before and after);
2. the baseline: ``bench.bare_app`` (Flask, read the body, 204) under gunicorn with
   ``deploy/gunicorn.conf.py``;
3. Portside: ``controlplane.wsgi:app`` under the same gunicorn config, with no control
   worker running, so every accepted delivery waits in the outbox (``received``: its
   commit is its enqueue, the relay of a control worker sends it on);
4. for each: a short warm-up, then N signed push deliveries (unique GUIDs) from
   ``--concurrency`` sender processes; then the checks (every answer 202, N distinct
   rows ``received``);
5. a table, the verdict against the targets, and — when a target is missed — a py-spy
   profile of the request path.

Exit status: 0 when the run worked (even if a target is missed), 1 when it broke.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from sqlalchemy import create_engine, text

from bench import wrk
from bench.common import (
    ROOT,
    Figure,
    LoadResult,
    Server,
    broken,
    build_request,
    cpu_snapshot,
    cpu_used,
    gunicorn_setting,
    pids_named,
    redis_url,
    run_load,
    temporary_database,
)
from controlplane import migrate
from controlplane.github.webhooks import signature

PAYLOADS = ROOT.parent / "shared" / "github" / "payloads"
DEFAULT_PAYLOAD = "push__with-installation.payload.json"
PATH = "/webhooks/github"
WEBHOOK_SECRET = "portside-bench-webhook-secret"  # noqa: S105 - a throw-away test secret
# Round one's targets, for this view: bare under Portside's own gunicorn config, Python
# senders. The targets hold for the stricter view (bench/wrk.py): bare under
# plain sync workers, one per core, and wrk.
TARGET_RATIO = 0.35
TARGET_P99_MS = 50.0
STRICT_TARGET_RATIO = 0.6
STRICT_TARGET_P99_MS = 15.0


class BenchError(Exception):
    """The run itself broke: the figures cannot be trusted."""


# ------------------------------------------------------------------------------------
# Deliveries
# ------------------------------------------------------------------------------------


def delivery_headers(
    event: str, body: bytes, guid: str, secret: str = WEBHOOK_SECRET
) -> dict[str, str]:
    """The headers GitHub sends with a delivery (see tests/helpers.py)."""
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": guid,
        "X-GitHub-Hook-ID": "123456",
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-GitHub-Hook-Installation-Target-ID": "4242",
        "X-Hub-Signature-256": signature(body, secret),
        "User-Agent": "GitHub-Hookshot/044aadd",
        "Content-Type": "application/json",
    }


@dataclass(frozen=True)
class Batch:
    guids: list[str]
    requests: list[bytes]


def make_batch(port: int, payload: Path, count: int) -> Batch:
    """``count`` deliveries of ``payload``, each with a GUID of its own, built up front."""
    body = payload.read_bytes()
    event = payload.name.split("__", 1)[0]
    guids = [str(uuid.uuid4()) for _ in range(count)]
    requests = [
        build_request(port, PATH, delivery_headers(event, body, guid), body) for guid in guids
    ]
    return Batch(guids, requests)


# ------------------------------------------------------------------------------------
# Environment
# ------------------------------------------------------------------------------------


def admin_database_url() -> str:
    return os.environ.get(
        "PORTSIDE_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    )


def server_env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PORTSIDE_") or name.startswith("PORTSIDE_TEST_")
    }
    env.update(
        PORTSIDE_DATABASE_URL=database_url,
        PORTSIDE_REDIS_URL=redis_url(),
        PORTSIDE_GITHUB_WEBHOOK_SECRET=WEBHOOK_SECRET,
        PORTSIDE_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


# ------------------------------------------------------------------------------------
# One target
# ------------------------------------------------------------------------------------


@dataclass
class TargetRun:
    name: str
    app: str
    expected_status: int
    load: LoadResult | None = None
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def cpu_ms_per_request(self) -> dict[str, float]:
        answered = self.load.answered if self.load is not None else 0
        return {
            name: round(seconds * 1000 / answered, 3)
            for name, seconds in self.cpu_seconds.items()
            if answered
        }

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = {"app": self.app, "expected_status": self.expected_status}
        if self.load is not None:
            data.update(self.load.summary())
            data["cpu_ms_per_request"] = self.cpu_ms_per_request()
        data["checks"] = self.checks
        data["problems"] = self.problems
        return data


def status_problems(load: LoadResult, expected: int, what: str) -> list[str]:
    problems = [f"{what}: {error}" for error in load.errors[:10]]
    wrong = {code: count for code, count in load.statuses.items() if code != expected}
    if wrong:
        problems.append(f"{what}: answers other than {expected}: {wrong}")
    if load.answered != load.sent:
        problems.append(f"{what}: {load.sent - load.answered} of {load.sent} unanswered")
    return problems


def check_portside(engine: Any, guids: Sequence[str]) -> tuple[list[str], list[str]]:
    """Every delivery committed once and waiting in the outbox."""
    checks: list[str] = []
    problems: list[str] = []
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT guid, status FROM webhook_deliveries")).all()
    count = len(rows)
    stored = {row.guid for row in rows}
    statuses = Counter(row.status for row in rows)
    expected = len(guids)
    if count == expected and stored == set(guids):
        checks.append(f"{count} delivery rows, all {len(stored)} GUIDs distinct and as sent")
    else:
        missing = len(set(guids) - stored)
        problems.append(
            f"database: {count} rows ({len(stored)} distinct GUIDs) for {expected} deliveries, "
            f"{missing} missing"
        )
    if statuses == Counter({"received": expected}):
        checks.append(f"{expected} rows with status 'received' (in the outbox)")
    else:
        problems.append(f"database: statuses {dict(statuses)}, want {expected} 'received'")
    return checks, problems


def reset_intake(engine: Any) -> None:
    """Forget the warm-up's rows."""
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM webhook_deliveries"))


def cpu_groups(server: Server) -> dict[str, list[int]]:
    """The processes whose CPU time is accounted: the server, PostgreSQL, Redis."""
    server_pids = [server.process.pid, *server.worker_pids()] if server.process else []
    return {
        "gunicorn": server_pids,
        "postgres": pids_named("postgres"),
        "redis": pids_named("redis-server"),
    }


def warm_up(server: Server, expected_status: int, args: argparse.Namespace, payload: Path) -> None:
    if args.warmup:
        warmup = make_batch(server.port, payload, args.warmup)
        load = run_load(server.port, warmup.requests, args.concurrency, args.time_limit)
        problems = status_problems(load, expected_status, "warm-up")
        if problems:
            raise BenchError(f"{server.name}: the warm-up failed: {problems}")


def run_target(
    run: TargetRun, *, server: Server, args: argparse.Namespace, payload: Path, engine: Any
) -> None:
    """One measured round of one target."""
    if run.name == "portside":
        reset_intake(engine)
    batch = make_batch(server.port, payload, args.requests)
    before = cpu_snapshot(cpu_groups(server))
    run.load = run_load(server.port, batch.requests, args.concurrency, args.time_limit)
    run.cpu_seconds = cpu_used(before, cpu_snapshot(cpu_groups(server)))
    run.problems += status_problems(run.load, run.expected_status, "run")
    if not run.problems:
        run.checks.append(f"{run.load.answered} answers, all {run.expected_status}")
    if run.name == "portside":
        checks, problems = check_portside(engine, batch.guids)
        run.checks += checks
        run.problems += problems


# ------------------------------------------------------------------------------------
# Profile
# ------------------------------------------------------------------------------------

# Frames worth naming when the time of a request is broken down, in display order.
# (label, a substring of py-spy's "function (file:line)" frame)
BREAKDOWN: tuple[tuple[str, str], ...] = (
    ("gthread handle (whole request, wall)", "handle (gunicorn/workers/gthread.py"),
    ("  read+parse the HTTP request", "(gunicorn/http/parser.py"),
    ("  webhook endpoint", "_receive (controlplane/api/webhooks.py"),
    ("    read the body", "_read_body (controlplane/api/webhooks.py"),
    ("    verify_signature", "verify_signature (controlplane/github/webhooks.py"),
    ("    webhooks.parse (json.loads)", "parse (controlplane/github/webhooks.py"),
    ("    deliveries.intake", "intake (controlplane/services/deliveries.py"),
    ("      INSERT (DB-API)", "execute_on_driver (controlplane/db.py"),
    ("      pool checkout+checkin", "(sqlalchemy/pool/"),
    ("      wake the relays (notify_soon)", "notify_soon (controlplane/db.py"),
    ("      metrics", "count_delivery (controlplane/metrics.py"),
    ("  access log write", "access (gunicorn/glogging.py"),
)
REQUEST_FRAME = BREAKDOWN[0][1]


def frame_key(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``func (module path without site-packages)``."""
    name, _, location = frame.partition(" (")
    path = location.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def analyse_profile(raw: Path, rate: int, requests: int) -> dict[str, Any]:
    """Per-request wall time by function, from py-spy's collapsed (raw) stacks."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    matched: Counter[str] = Counter()  # breakdown label -> samples, each stack counted once
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [frame_key(frame) for frame in stack.split(";")]
        if not any(REQUEST_FRAME in frame for frame in frames):
            continue  # idle threads, the poller, gunicorn's arbiter
        count = int(count_text)
        total += count
        for key in set(frames):
            inclusive[key] += count
        leaf[frames[-1]] += count
        for label, needle in BREAKDOWN:
            if any(needle in frame for frame in frames):
                matched[label] += count
    ms_per_sample = 1000.0 / rate / max(requests, 1)

    def per_request(samples: int) -> float:
        return round(samples * ms_per_sample, 3)

    breakdown = [
        {
            "label": label,
            "ms_per_request": per_request(matched[label]),
            "share": round(matched[label] / total, 3) if total else 0.0,
        }
        for label, _ in BREAKDOWN
    ]
    return {
        "samples": total,
        "rate_hz": rate,
        "requests": requests,
        "breakdown": breakdown,
        "top_inclusive": [
            {"function": key, "ms_per_request": per_request(n), "share": round(n / total, 3)}
            for key, n in inclusive.most_common(40)
            if total
        ],
        "top_self": [
            {"function": key, "ms_per_request": per_request(n), "share": round(n / total, 3)}
            for key, n in leaf.most_common(20)
            if total
        ],
    }


def py_spy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_portside(
    server: Server, args: argparse.Namespace, payload: Path, out_dir: Path, mode: str
) -> dict[str, Any]:
    """Run the load again under py-spy, sampling every worker.

    ``mode`` "wall": every thread, waiting included (where a request's latency goes);
    "cpu": only the thread holding the GIL (where the Python CPU time goes).
    """
    binary = py_spy_binary()
    if binary is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    if server.process is None:
        return {"error": "the server is not running"}
    raw = out_dir / f"portside-intake.{mode}.pyspy.txt"
    rate = args.profile_rate
    command = [
        binary,
        "record",
        "--pid",
        str(server.process.pid),
        "--subprocesses",
        "--idle" if mode == "wall" else "--gil",
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        str(raw),
    ]
    log = (out_dir / "py-spy.log").open("wb")
    spy = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(2.0)  # py-spy attaches to the master and finds the workers
        if spy.poll() is not None:
            log.close()
            return {"error": (out_dir / "py-spy.log").read_text(errors="replace")[-2000:]}
        batch = make_batch(server.port, payload, args.requests)
        load = run_load(server.port, batch.requests, args.concurrency, args.time_limit)
    finally:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(10)
        log.close()
    if not raw.exists():
        return {"error": (out_dir / "py-spy.log").read_text(errors="replace")[-2000:]}
    result = analyse_profile(raw, rate, load.answered)
    result["mode"] = mode
    result["profiled_run"] = load.summary()
    result["raw_stacks"] = str(raw)
    return result


# ------------------------------------------------------------------------------------
# The stricter view: wrk against bare Flask under plain sync workers
# ------------------------------------------------------------------------------------


def strict_rounds(
    args: argparse.Namespace, env: dict[str, str], engine: Any, portside: Server, work_dir: Path
) -> dict[str, Any]:
    """Rounds of wrk at saturation: bare under gunicorn's sync workers (one per core, no
    access log: the best plain configuration), then Portside as configured, back to back."""
    if not wrk.available():
        return {"problems": ["wrk is not installed (apt-get install wrk): not measured"]}
    payload = PAYLOADS / args.payload
    body = payload.read_bytes()
    headers = delivery_headers(payload.name.split("__", 1)[0], body, "")
    del headers[wrk.DELIVERY_HEADER]  # wrk sets a fresh one on every request
    cores = os.cpu_count() or 1
    bare = Server("bare-sync", "bench.bare_app:app", env, work_dir / "bare-sync.log", cores)
    rounds: list[dict[str, wrk.WrkResult]] = []
    cpu: list[dict[str, str]] = []  # per round and target: CPU ms per request, by process
    problems: list[str] = []
    try:
        bare.start()
        for _ in range(args.wrk_rounds):
            pair: dict[str, wrk.WrkResult] = {}
            cpu.append({})
            for name, server in (("bare", bare), ("portside", portside)):
                wrk.run_wrk(server.port, PATH, headers, body, seconds=1)  # warm: connections
                reset_intake(engine)
                before = cpu_snapshot(cpu_groups(server))
                pair[name] = load = wrk.run_wrk(
                    server.port, PATH, headers, body, seconds=args.wrk_seconds
                )
                used = cpu_used(before, cpu_snapshot(cpu_groups(server)))
                cpu[-1][name] = ", ".join(
                    f"{group} {seconds * 1000 / max(load.requests, 1):.2f}"
                    for group, seconds in used.items()
                    if group in ("gunicorn", "postgres", "other", "machine")
                )
                if load.failed:
                    problems.append(f"wrk {name}: errors {load.errors}")
            problems += check_strict_rows(engine, pair["portside"])
            rounds.append(pair)
    finally:
        bare.stop()
    if problems or not rounds:
        return {"problems": problems, "rounds": rounds, "cpu": cpu}
    ratios = [
        pair["portside"].requests_per_second / pair["bare"].requests_per_second for pair in rounds
    ]
    ratio = statistics.median(ratios)
    p99 = max(pair["portside"].p99_ms for pair in rounds)  # wrk gives percentiles only
    return {
        "problems": [],
        "rounds": rounds,
        "cpu": cpu,
        "ratio": round(ratio, 3),
        "round_ratios": [round(value, 3) for value in ratios],
        "ratio_pass": ratio >= STRICT_TARGET_RATIO,
        "p99_ms": round(p99, 2),
        "p99_pass": p99 < STRICT_TARGET_P99_MS,
    }


def check_strict_rows(engine: Any, load: wrk.WrkResult) -> list[str]:
    """Every delivery wrk counted was stored once, as sent (a GUID sent twice would be
    answered 200 and add no row). Only this run's rows: the warm-up's last deliveries,
    in flight when its clock stopped, may land after the reset."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT count(*) AS n, count(DISTINCT guid) AS guids, "
                "count(*) FILTER (WHERE status = 'received') AS received "
                "FROM webhook_deliveries WHERE guid LIKE :prefix"
            ),
            {"prefix": f"{load.prefix}-%"},
        ).one()
    if rows.n == rows.guids == rows.received and rows.n >= load.requests:
        return []
    return [f"wrk portside: {load.requests} answered but rows {dict(rows._mapping)}"]


# ------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------


def render_table(rounds: Sequence[tuple[TargetRun, TargetRun]]) -> list[str]:
    lines = [
        f"{'target':<12} {'requests':>8} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}"
    ]
    for number, pair in enumerate(rounds, 1):
        for run in pair:
            name = f"{run.name} #{number}"
            load = run.load
            if load is None:
                lines.append(f"{name:<12} {'—':>8}")
                continue
            lines.append(
                f"{name:<12} {load.answered:>8} {load.requests_per_second:>9.1f} "
                f"{load.percentile(50):>8.2f} {load.percentile(95):>8.2f} "
                f"{load.percentile(99):>8.2f} {load.percentile(100):>8.2f}"
            )
    return lines


def pooled(runs: Sequence[TargetRun]) -> LoadResult:
    """The rounds of one target as one load: every latency, the total time."""
    loads = [run.load for run in runs if run.load is not None]
    return LoadResult(
        sent=sum(load.sent for load in loads),
        elapsed=sum(load.elapsed for load in loads),
        latencies_ms=[latency for load in loads for latency in load.latencies_ms],
        statuses=dict(sum((Counter(load.statuses) for load in loads), Counter())),
        errors=[error for load in loads for error in load.errors],
    )


def verdicts(rounds: Sequence[tuple[TargetRun, TargetRun]]) -> dict[str, Any]:
    """The ratio is the median of the rounds' ratios (each round runs bare, then Portside,
    back to back, so both see the same machine); p99 is over every round's latencies."""
    ratios = []
    for bare, portside in rounds:
        assert bare.load is not None and portside.load is not None
        ratios.append(portside.load.requests_per_second / bare.load.requests_per_second)
    ratio = statistics.median(ratios)
    p99 = pooled([portside for _bare, portside in rounds]).percentile(99)
    return {
        "ratio": round(ratio, 3),
        "round_ratios": [round(value, 3) for value in ratios],
        "ratio_target": TARGET_RATIO,
        "ratio_pass": ratio >= TARGET_RATIO,
        "p99_ms": round(p99, 2),
        "p99_target_ms": TARGET_P99_MS,
        "p99_pass": p99 < TARGET_P99_MS,
    }


PROFILE_TITLES = {
    "wall": "Where a Portside request's latency goes (py-spy --idle: wall clock, waits included",
    "cpu": "Where the gunicorn workers' Python CPU goes (py-spy --gil: the GIL holder only",
}


def render_profile(profile: dict[str, Any], mode: str) -> list[str]:
    if "error" in profile:
        return [f"profile ({mode}): not taken: {profile['error']}"]
    lines = [
        "",
        f"{PROFILE_TITLES[mode]}; {profile['samples']} samples at {profile['rate_hz']} Hz "
        f"over {profile['requests']} requests; ms per request, share):",
    ]
    for item in profile["breakdown"]:
        lines.append(
            f"  {item['label']:<42} {item['ms_per_request']:>7.2f} ms {item['share']:>6.1%}"
        )
    lines.append("  top functions by self time:")
    for item in profile["top_self"][:12]:
        lines.append(
            f"    {item['ms_per_request']:>7.2f} ms {item['share']:>6.1%}  {item['function']}"
        )
    lines.append(f"  raw stacks: {profile['raw_stacks']}")
    return lines


# ------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark Portside's webhook intake against a bare Flask app.",
    )
    parser.add_argument("--requests", type=int, default=1000, help="deliveries per target")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up deliveries per target")
    parser.add_argument(
        "--rounds", type=int, default=3, help="measured rounds, each bare then Portside"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent senders")
    parser.add_argument("--payload", default=DEFAULT_PAYLOAD, help=f"a file in {PAYLOADS}")
    parser.add_argument(
        "--time-limit", type=float, default=120.0, help="seconds allowed per load run"
    )
    parser.add_argument(
        "--portside-app",
        default="controlplane.wsgi:app",
        help="the WSGI app measured as Portside (to try a change without editing the code)",
    )
    parser.add_argument(
        "--wrk-rounds", type=int, default=3, help="rounds of the wrk view (0: skip it)"
    )
    parser.add_argument(
        "--wrk-seconds", type=float, default=8.0, help="seconds of wrk per target and round"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="profile Portside with py-spy: when a target is missed (auto), always, never",
    )
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/second")
    parser.add_argument(
        "--keep-dir", type=Path, help="keep server logs and profiles here (default: temporary)"
    )
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0 or args.wrk_rounds < 0 or args.wrk_seconds <= 0:
        parser.error("--warmup and --wrk-rounds must not be negative, --wrk-seconds positive")
    if not (PAYLOADS / args.payload).is_file():
        parser.error(f"no payload {args.payload!r} in {PAYLOADS}")
    return args


def benchmark(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """Both servers up at once; each round measures bare, then Portside, so a noisy
    moment of the machine touches one round rather than one target."""
    payload = PAYLOADS / args.payload
    redis = Redis.from_url(redis_url(), socket_connect_timeout=2, socket_timeout=10)
    redis.flushdb()
    result: dict[str, Any] = {}
    rounds: list[tuple[TargetRun, TargetRun]] = []
    problems: list[str] = []
    try:
        with temporary_database(admin_database_url()) as database_url:
            engine = create_engine(database_url)
            env = server_env(database_url, work_dir / "data")
            bare = Server("bare", "bench.bare_app:app", env, work_dir / "bare.log")
            portside = Server("portside", args.portside_app, env, work_dir / "portside.log")
            try:
                migrate.upgrade(engine)
                result["gunicorn"] = {
                    "config": "deploy/gunicorn.conf.py",
                    "workers": gunicorn_setting("workers", env),
                    "threads": gunicorn_setting("threads", env),
                    "cpus": os.cpu_count(),
                }
                bare.start()
                portside.start()
                warm_up(bare, 204, args, payload)
                warm_up(portside, 202, args, payload)
                for _ in range(args.rounds):
                    pair = (
                        TargetRun("bare", "bench.bare_app:app", 204),
                        TargetRun("portside", args.portside_app, 202),
                    )
                    rounds.append(pair)
                    for run, server in zip(pair, (bare, portside), strict=True):
                        run_target(run, server=server, args=args, payload=payload, engine=engine)
                        problems += [f"{run.name}: {problem}" for problem in run.problems]
                    if problems:
                        break
                if not problems and args.wrk_rounds:
                    result["strict"] = strict = strict_rounds(args, env, engine, portside, work_dir)
                    if wrk.available():
                        problems += strict["problems"]
                wanted = args.profile == "always"
                if args.profile == "auto" and not problems:
                    marks = verdicts(rounds)
                    wanted = not (marks["ratio_pass"] and marks["p99_pass"])
                if wanted and not problems:
                    result["profile"] = {
                        mode: profile_portside(portside, args, payload, work_dir, mode)
                        for mode in ("wall", "cpu")
                    }
            except Exception as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
            finally:
                bare.stop()
                portside.stop()
                engine.dispose()
            if problems:
                for server in (bare, portside):
                    problems.append(f"{server.name} log ({server.log_path}):\n{server.log_tail()}")
    finally:
        redis.flushdb()
        redis.close()
    result["rounds"] = [{run.name: run.summary() for run in pair} for pair in rounds]
    result["problems"] = problems
    result["ok"] = not problems and len(rounds) == args.rounds
    if result["ok"]:
        result["verdict"] = verdicts(rounds)
    result["_rounds"] = rounds
    return result


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    rounds = result.pop("_rounds")
    if args.json:
        print(json.dumps(result, indent=2, default=vars))  # vars: the wrk results
        return
    gunicorn = result.get("gunicorn", {})
    print(
        f"Webhook intake: {args.rounds} rounds of {args.requests} signed {args.payload} "
        f"deliveries per target, {args.concurrency} senders, warm-up {args.warmup}; gunicorn "
        f"{gunicorn.get('workers')} workers x {gunicorn.get('threads')} threads (gthread)"
    )
    print()
    for line in render_table(rounds):
        print(line)
    print()
    cpu_counts = gunicorn.get("cpus")
    print(f"CPU ms per request (this machine has {cpu_counts} CPUs; 'other' = everything else):")
    for number, pair in enumerate(rounds, 1):
        for run in pair:
            shares = run.cpu_ms_per_request()
            if not shares:
                continue
            parts = ", ".join(f"{name} {value:.2f}" for name, value in shares.items())
            print(f"  {run.name:<9} #{number} {parts}")
            machine = shares.get("machine", 0.0)
            if machine and shares.get("other", 0.0) > 0.25 * machine:
                print(
                    f"  warning: other processes used {shares['other'] / machine:.0%} of the "
                    f"machine's CPU during this run; its figures are noisy"
                )
    print()
    for number, pair in enumerate(rounds, 1):
        for run in pair:
            for check in run.checks:
                print(f"check {run.name} #{number}: ok: {check}")
    for problem in result.get("problems", []):
        print(f"FAILED: {problem}")
    verdict = result.get("verdict")
    if verdict:
        print()
        ratio_word = "PASS" if verdict["ratio_pass"] else "FAIL"
        p99_word = "PASS" if verdict["p99_pass"] else "FAIL"
        print(
            f"{ratio_word} vs target: Portside/bare throughput ratio {verdict['ratio']:.3f} "
            f"(median of the rounds {verdict['round_ratios']}; target >= {TARGET_RATIO})"
        )
        print(
            f"{p99_word} vs target: Portside p99 latency {verdict['p99_ms']:.2f} ms over every "
            f"round (target < {TARGET_P99_MS:.0f} ms)"
        )
    else:
        print("\nthe run broke: no verdict")
    for line in render_strict(result.get("strict")):
        print(line)
    for mode, profile in result.get("profile", {}).items():
        for line in render_profile(profile, mode):
            print(line)


def render_strict(strict: dict[str, Any] | None) -> list[str]:
    if strict is None:
        return []
    lines = ["", "wrk at saturation (8 connections, 2 threads), bare under sync workers:"]
    for number, (pair, cpu) in enumerate(
        zip(strict.get("rounds", []), strict.get("cpu", []), strict=False), 1
    ):
        for name, load in pair.items():
            lines.append(f"  {name:<9} #{number} {load.describe()}")
            lines.append(f"  {'':<9}    CPU ms per request: {cpu.get(name, '-')}")
    lines += [f"FAILED: {problem}" for problem in strict["problems"]]
    if "ratio" in strict:
        lines.append(
            f"{'PASS' if strict['ratio_pass'] else 'FAIL'} vs target: ratio {strict['ratio']:.3f} "
            f"(median of {strict['round_ratios']}; target >= {STRICT_TARGET_RATIO})"
        )
        lines.append(
            f"{'PASS' if strict['p99_pass'] else 'FAIL'} vs target: p99 {strict['p99_ms']:.2f} "
            f"ms, the worst round's (target < {STRICT_TARGET_P99_MS:.0f} ms)"
        )
    return lines


def figures(result: dict[str, Any], args: argparse.Namespace) -> list[Figure]:
    """The intake's figures for the final table: wrk against bare under sync workers (the
    issue's targets), then the bench's own senders against bare under Portside's config."""
    found: list[Figure] = []
    if args.wrk_rounds:
        ratio_name = "webhook intake: Portside/bare sync (wrk, 8 conns)"
        p99_name = "webhook intake: p99 latency (wrk, 8 conns)"
        ratio_target = f">= {STRICT_TARGET_RATIO}"
        p99_target = f"< {STRICT_TARGET_P99_MS:.0f} ms"
        strict = result.get("strict") or {}
        if "ratio" not in strict:
            found += [broken(ratio_name, ratio_target), broken(p99_name, p99_target)]
        else:
            found += [
                Figure(ratio_name, f"{strict['ratio']:.3f}", ratio_target, strict["ratio_pass"]),
                Figure(p99_name, f"{strict['p99_ms']:.1f} ms", p99_target, strict["p99_pass"]),
            ]
    ratio_name = f"webhook intake: Portside/bare gthread ({args.concurrency} senders)"
    p99_name = f"webhook intake: p99 latency ({args.concurrency} senders)"
    ratio_target, p99_target = f">= {TARGET_RATIO}", f"< {TARGET_P99_MS:.0f} ms"
    verdict = result.get("verdict")
    if not verdict:
        return [*found, broken(ratio_name, ratio_target), broken(p99_name, p99_target)]
    return [
        *found,
        Figure(ratio_name, f"{verdict['ratio']:.3f}", ratio_target, verdict["ratio_pass"]),
        Figure(p99_name, f"{verdict['p99_ms']:.1f} ms", p99_target, verdict["p99_pass"]),
    ]


def run(argv: Sequence[str] | None = None) -> tuple[int, list[Figure]]:
    """Run, print the report; return the exit status and the figures for the final table."""
    args = parse_args(argv)
    if args.keep_dir is not None:
        args.keep_dir.mkdir(parents=True, exist_ok=True)
        work_dir = args.keep_dir.resolve()
        result = benchmark(args, work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="portside-bench-") as temp:
            result = benchmark(args, Path(temp))
            for mode, profile in result.get("profile", {}).items():
                if "raw_stacks" in profile:
                    kept = Path(tempfile.gettempdir()) / f"portside-bench-intake.{mode}.pyspy.txt"
                    shutil.copyfile(profile["raw_stacks"], kept)
                    profile["raw_stacks"] = str(kept)
    ok = bool(result["ok"])
    report(result, args)
    return (0 if ok else 1), figures(result, args)


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv)[0]
