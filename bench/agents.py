"""The desired-state benchmark: what the agents' polls cost the control plane.

One run, on this machine, against 127.0.0.1 only:

1. a PostgreSQL database of its own (migrated, dropped at the end), Redis db 10 (flushed
   before and after), ``--hosts`` hosts with their agent tokens;
2. the baseline: a bare Flask endpoint (``bench.agents:create_bare_app()``) that answers
   ``GET /v1/agent/desired-state`` 304 when ``If-None-Match`` matches, under gunicorn with
   ``deploy/gunicorn.conf.py``; then Portside (``controlplane.wsgi:app``) under the same
   config;
3. (a) polls that hit the 304 path — each request carries one host's token and that
   host's current ETag, the hosts taken in turn — from the same load client as the
   webhook benchmark (``--concurrency`` sender processes, keep-alive), after a warm-up
   that fills every worker's token cache; requests/s and latency of each, the ratio;
4. (b) the same 304 load with ``--small`` and then ``--large`` environments in the
   database (bulk-inserted with SQLAlchemy Core: a service, environment, build and
   active deployment each, spread over the hosts): the 304 throughput at both sizes,
   and the database transactions per request (from ``pg_stat_database``);
5. (c) a fleet of ``--agents`` simulated agents (one per host, threads of this process),
   each polling as hostagent's loop does: ``?wait=`` (the agent's default interval) with
   its ETag, giving up after wait + WAIT_MARGIN, backing off after an error. After every
   agent has its first snapshot, ``--steady`` seconds are watched: the long polls held at
   once, the agents' outcomes,
   gunicorn's RSS and CPU. Then 10 hosts get a new generation at once (as recording a
   deployment does: bumped in the transaction, announced after the commit), then
   1,000 hosts: the time until each affected agent has its 200. Each gthread thread
   holds one long poll, so the fleet needs workers x threads >= agents: Portside is
   restarted for this part with enough threads (``--long-poll-threads`` to choose);
6. (d) at each size, the same 304s from outside with wrk (8 connections, 2 threads, each
   host's token and ETag in turn) against a bare Flask 204 under gunicorn *sync* workers
   (``GUNICORN_CMD_ARGS=--worker-class sync``; the same number of workers), rounds
   alternating: the ratio of their requests/s (issue 20's stricter baseline).

Every server runs ``--workers`` (default 2) gunicorn workers: one web node.

Exit status: 0 when the run worked (even if a target is missed), 1 when it broke.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from sqlalchemy import Engine, create_engine, func, insert, select, text, update

from bench import wrkload
from bench.common import (
    HOST,
    Figure,
    LoadResult,
    Server,
    broken,
    build_request,
    cpu_snapshot,
    cpu_used,
    gunicorn_setting,
    pids_named,
    process_rss_bytes,
    redis_url,
    run_load,
    temporary_database,
)
from bench.webhooks import admin_database_url
from controlplane import migrate
from controlplane.models import Build, Deployment, Environment, Host, Service
from controlplane.services import generations, hosts
from hostagent.client import WAIT_MARGIN, backoff_delay
from hostagent.settings import DEFAULT_INTERVAL

SECRET_KEY = "portside-bench-agents-key-0123456789"  # noqa: S105 - a throw-away test key
METRICS_TOKEN = "portside-bench-metrics-token-0123"  # noqa: S105 - a throw-away test token
PATH = "/v1/agent/desired-state"
BARE_204_PATH = "/v1/agent/nothing"
TARGET_RATIO = 0.6
TARGET_WRK_RATIO = 0.85
BARE_ETAG = '"7"'
DIGEST = "sha256:" + "ab" * 32
STATS_FLUSH_SECONDS = 10.5
KEEPALIVE_SECONDS = 4.0  # under deploy/gunicorn.conf.py's keepalive: older ones are dropped


class BenchError(Exception):
    """The run itself broke: the figures cannot be trusted."""


# ------------------------------------------------------------------------------------
# The baseline: the same protocol in bare Flask
# ------------------------------------------------------------------------------------


def create_bare_app() -> Flask:
    """``GET /v1/agent/desired-state``: 304 when If-None-Match is the ETag, else a body."""
    app = Flask(__name__)

    @app.get(PATH)
    def desired_state() -> Response:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return Response(status=401)
        if request.headers.get("If-None-Match") == BARE_ETAG:
            response = Response(status=304)
        else:
            response = jsonify(generation=7, complete=True, environments=[])
        response.headers["ETag"] = BARE_ETAG
        return response

    @app.get(BARE_204_PATH)
    def nothing() -> tuple[str, int]:
        return "", 204

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    return app


# ------------------------------------------------------------------------------------
# Environment
# ------------------------------------------------------------------------------------


def server_env(
    database_url: str, data_dir: Path, threads: int | None, workers: int
) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PORTSIDE_") or name.startswith("PORTSIDE_TEST_")
    }
    env.update(
        PORTSIDE_DATABASE_URL=database_url,
        PORTSIDE_REDIS_URL=redis_url(),
        PORTSIDE_SECRET_KEY=SECRET_KEY,
        PORTSIDE_DATA_DIR=str(data_dir),
        PORTSIDE_METRICS_TOKEN=METRICS_TOKEN,
        PYTHONUNBUFFERED="1",
        GUNICORN_WORKERS=str(workers),
    )
    if threads is not None:
        env["GUNICORN_THREADS"] = str(threads)
    return env


@dataclass(frozen=True)
class Agent:
    host_id: int
    name: str
    token: str


def create_hosts(engine: Engine, count: int, first: int = 0) -> list[Agent]:
    from sqlalchemy.orm import Session

    agents = []
    with Session(engine) as session:
        for number in range(first, first + count):
            host, token = hosts.create_host(session, f"bench-host-{number}", "bench")
            agents.append(Agent(host.id, host.name, token))
        session.commit()
    return agents


def seed_environments(engine: Engine, agents: Sequence[Agent], total: int) -> int:
    """Bring the database to ``total`` environments (each with a service, a succeeded
    build and its active deployment), spread over the hosts; return how many were added."""
    with engine.connect() as connection:
        present = int(connection.scalar(select(func.count()).select_from(Environment)) or 0)
    wanted = total - present
    if wanted <= 0:
        return 0
    first = present + 1
    numbers = range(first, first + wanted)
    host_of = {n: agents[n % len(agents)].host_id for n in numbers}
    chunk = 2000
    with engine.begin() as connection:
        for start in range(0, wanted, chunk):
            part = numbers[start : start + chunk]
            connection.execute(
                insert(Service),
                [
                    {
                        "id": n,
                        "name": f"svc-{n}",
                        "repository_full_name": f"bench/app-{n}",
                        "branch": "main",
                        "host_id": host_of[n],
                        "port": 8080,
                        "domain": f"svc-{n}.bench.example",
                    }
                    for n in part
                ],
            )
            connection.execute(
                insert(Environment),
                [
                    {
                        "id": n,
                        "service_id": n,
                        "host_id": host_of[n],
                        "name": f"svc-{n}",
                        "kind": "production",
                        "status": "running",
                        "branch": "main",
                        "domain": f"svc-{n}.bench.example",
                        "generation": 1,
                    }
                    for n in part
                ],
            )
            connection.execute(
                insert(Build),
                [
                    {
                        "id": n,
                        "service_id": n,
                        "environment_id": n,
                        "commit_sha": f"{n:040x}",
                        "branch": "main",
                        "status": "succeeded",
                        "images": {
                            "app": {
                                "repository": f"127.0.0.1:5001/bench/app-{n}",
                                "tag": f"{n:07x}",
                                "digest": DIGEST,
                            }
                        },
                    }
                    for n in part
                ],
            )
            connection.execute(
                insert(Deployment),
                [{"id": n, "environment_id": n, "build_id": n, "status": "active"} for n in part],
            )
        connection.execute(
            update(Environment)
            .where(Environment.id >= first)
            .values(current_deployment_id=Environment.id)
        )
        for table in ("services", "environments", "builds", "deployments"):
            connection.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :last)"),
                {"last": first + wanted - 1},
            )
        # What the hosts should run changed: every generation moves, as bump() does.
        connection.execute(update(Host).values(generation=Host.generation + 1))
        connection.execute(text("ANALYZE"))
    return wanted


def forget_cached_generations(redis: Redis, agents: Sequence[Agent]) -> None:
    redis.delete(*[generations.generation_key(agent.host_id) for agent in agents])


def current_etags(port: int, agents: Sequence[Agent]) -> tuple[dict[int, str], list[float]]:
    """GET every host's full snapshot (a 200): its ETag, and how long each took (ms)."""
    etags: dict[int, str] = {}
    took: list[float] = []
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        for agent in agents:
            began = time.perf_counter()
            connection.request("GET", PATH, headers={"Authorization": f"Bearer {agent.token}"})
            response = connection.getresponse()
            body = response.read()
            took.append((time.perf_counter() - began) * 1000)
            if response.status != 200:
                raise BenchError(
                    f"{agent.name}: desired state answered {response.status}: {body!r}"
                )
            state = json.loads(body)
            etag = response.headers.get("ETag") or ""
            if etag != f'"{state["generation"]}"':
                raise BenchError(
                    f"{agent.name}: ETag {etag!r} for generation {state['generation']}"
                )
            etags[agent.host_id] = etag
    finally:
        connection.close()
    return etags, took


def poll_requests(
    port: int, agents: Sequence[Agent], etags: dict[int, str], count: int
) -> list[bytes]:
    """``count`` conditional GETs, the hosts taken in turn, built up front."""
    prepared = [
        build_request(
            port,
            PATH,
            {"Authorization": f"Bearer {agent.token}", "If-None-Match": etags[agent.host_id]},
            b"",
            method="GET",
        )
        for agent in agents
    ]
    return [prepared[index % len(prepared)] for index in range(count)]


def database_transactions(engine: Engine) -> int:
    """Transactions of our database so far (pg_stat_database, flushed about every second)."""
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_force_next_flush()"))
        value = connection.scalar(
            text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
        )
    return int(value or 0)


# ------------------------------------------------------------------------------------
# One 304 load run
# ------------------------------------------------------------------------------------


@dataclass
class PollRun:
    name: str
    environments: int | None
    load: LoadResult
    cpu_ms: dict[str, float]
    db_transactions_per_request: float | None
    db_transactions_in_warmup: int | None
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "environments": self.environments,
            **self.load.summary(),
            "cpu_ms_per_request": self.cpu_ms,
            "db_transactions_per_request": self.db_transactions_per_request,
            "db_transactions_in_warmup": self.db_transactions_in_warmup,
            "problems": self.problems,
        }
        return data


def cpu_groups(server: Server) -> dict[str, list[int]]:
    server_pids = [server.process.pid, *server.worker_pids()] if server.process else []
    return {
        "gunicorn": server_pids,
        "postgres": pids_named("postgres"),
        "redis": pids_named("redis-server"),
    }


def measure_polls(
    name: str,
    *,
    server: Server,
    warmup: list[bytes],
    requests: list[bytes],
    args: argparse.Namespace,
    engine: Engine | None,
    environments: int | None,
) -> PollRun:
    """Warm up (every worker learns every token), then measure the 304 load.

    With ``engine``, also count the database's transactions during the measured run:
    an idle PostgreSQL backend reports its statistics only after up to 10 s, hence the
    pauses (short enough that the 15 s token cache filled by the warm-up still holds).
    """
    if engine is not None:
        time.sleep(STATS_FLUSH_SECONDS)
        before_warmup = database_transactions(engine)
    warmed = run_load(server.port, warmup, args.concurrency, args.time_limit)
    problems = [f"warm-up: {error}" for error in warmed.errors[:5]]
    if engine is not None:
        time.sleep(STATS_FLUSH_SECONDS)
        before_tx = database_transactions(engine)
    before = cpu_snapshot(cpu_groups(server))
    load = run_load(server.port, requests, args.concurrency, args.time_limit)
    used = cpu_used(before, cpu_snapshot(cpu_groups(server)))
    per_request_tx = None
    warmup_tx = None
    if engine is not None:
        time.sleep(STATS_FLUSH_SECONDS)
        # Each of our statistics queries is a transaction too.
        spent = database_transactions(engine) - before_tx - 1
        per_request_tx = round(max(spent, 0) / max(load.answered, 1), 4)
        warmup_tx = before_tx - before_warmup - 1
    answered = max(load.answered, 1)
    cpu_ms = {key: round(value * 1000 / answered, 3) for key, value in used.items()}
    problems += [f"run: {error}" for error in load.errors[:10]]
    wrong = {code: n for code, n in load.statuses.items() if code != 304}
    if wrong:
        problems.append(f"answers other than 304: {wrong}")
    if load.answered != load.sent:
        problems.append(f"{load.sent - load.answered} of {load.sent} unanswered")
    return PollRun(name, environments, load, cpu_ms, per_request_tx, warmup_tx, problems)


# ------------------------------------------------------------------------------------
# (d) the same 304s from outside: wrk at saturation against a bare 204 on sync workers
# ------------------------------------------------------------------------------------

SYNC_WORKERS = "--worker-class sync"  # GUNICORN_CMD_ARGS: over the config file's gthread


def measure_wrk(
    *,
    bare_sync: Server,
    portside: Server,
    agents: Sequence[Agent],
    etags: dict[int, str],
    args: argparse.Namespace,
    work_dir: Path,
) -> dict[str, list[dict[str, Any]]]:
    """Rounds alternating the bare 204 (sync workers) and Portside's 304s, both sent the
    same headers (each host's token and ETag in turn)."""
    headers = [
        {"Authorization": f"Bearer {agent.token}", "If-None-Match": etags[agent.host_id]}
        for agent in agents
    ]
    rounds: dict[str, list[dict[str, Any]]] = {"bare_sync": [], "portside": []}
    for _ in range(args.rounds):
        for name, server, path in (
            ("bare_sync", bare_sync, BARE_204_PATH),
            ("portside", portside, PATH),
        ):
            found = wrkload.run(
                server.port, path, headers, work_dir=work_dir, seconds=args.wrk_seconds
            )
            rounds[name].append(found.summary())
    return rounds


def wrk_ratio(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Portside's median requests/s over the bare endpoint's, and both p99s."""

    def median(name: str, key: str) -> float:
        return float(statistics.median(run[key] for run in rounds[name]))

    ratio = median("portside", "requests_per_second") / median("bare_sync", "requests_per_second")
    return {
        "ratio": round(ratio, 3),
        "p99_portside_ms": round(median("portside", "p99_ms"), 2),
        "p99_bare_ms": round(median("bare_sync", "p99_ms"), 2),
        "unexpected": sum(run["unexpected"] + run["socket_errors"] for run in rounds["portside"]),
    }


# ------------------------------------------------------------------------------------
# (c) a fleet of agents long-polling
# ------------------------------------------------------------------------------------


@dataclass
class AgentLoop:
    """One simulated agent, polling as hostagent/agent.py's loop does: ``?wait=`` with its
    ETag, giving up after wait + WAIT_MARGIN, at once again after a change, the rest of
    the interval plus up to 10 % jitter after a 304, backing off (with ``wait=0``) after
    an error. It records when it first saw each generation."""

    agent: Agent
    wait: int
    stop: threading.Event
    generation: int | None = None
    seen: dict[int, float] = field(default_factory=dict)  # generation -> perf_counter
    outcomes: list[tuple[float, str]] = field(default_factory=list)  # (when, what)

    def poll(self, connection: http.client.HTTPConnection, wait: int) -> str:
        headers = {"Authorization": f"Bearer {self.agent.token}"}
        if self.generation is not None:
            headers["If-None-Match"] = f'"{self.generation}"'
        connection.request("GET", f"{PATH}?wait={wait}", headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status == 200:
            self.generation = int(json.loads(body)["generation"])
            self.seen.setdefault(self.generation, time.perf_counter())
        return str(response.status)

    def run(self, port: int) -> None:
        errors = 0
        wait = 0  # the first fetch answers at once
        connection: http.client.HTTPConnection | None = None
        idle_since = 0.0
        while not self.stop.is_set():
            began = time.perf_counter()
            if connection is not None and began - idle_since > KEEPALIVE_SECONDS:
                connection.close()  # the server has dropped it; urllib3 would open a new one
                connection = None
            if connection is None:
                connection = http.client.HTTPConnection(HOST, port)
            connection.timeout = wait + WAIT_MARGIN
            if connection.sock is not None:
                # A kept-alive socket keeps the timeout it was opened with (that of a
                # wait=0 poll); urllib3, as the agent uses it, sets it per request.
                connection.sock.settimeout(connection.timeout)
            try:
                what = self.poll(connection, wait)
            except TimeoutError:
                what = "timeout"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                what = type(exc).__name__
            idle_since = time.perf_counter()
            self.outcomes.append((idle_since, what))
            if what in ("200", "304"):
                errors, wait = 0, self.wait
                jitter = random.random() * self.wait * 0.1
                elapsed = idle_since - began
                # After a new snapshot the agent applies it and ticks again at once.
                delay = (
                    min(jitter, 0.5) if what == "200" else max(0.0, self.wait - elapsed) + jitter
                )
            else:
                connection.close()
                connection = None
                errors, wait = errors + 1, 0
                delay = backoff_delay(errors - 1)
            self.stop.wait(delay)
        if connection is not None:
            connection.close()


def bump_hosts(engine: Engine, redis: Redis, host_ids: set[int]) -> tuple[float, dict[int, int]]:
    """Commit new generations for ``host_ids`` and announce them, as recording a deployment
    does; return the perf_counter time just before the commit and the new generations."""
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        generations.bump_hosts(session, host_ids)
        changed = session.info.pop(generations.CHANGED_HOSTS, set())
        moment = time.perf_counter()
        session.commit()
    generations.announce(engine, redis, changed)
    with engine.connect() as connection:
        rows = connection.execute(
            select(Host.id, Host.generation).where(Host.id.in_(host_ids))
        ).all()
    return moment, {row.id: row.generation for row in rows}


def held_long_polls(port: int) -> int | None:
    """Long polls held right now, as the web workers count them (``/metrics``); None when
    the worker that took the request could not answer it (no thread free in time, or
    busy)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=METRICS_PATIENCE)
    try:
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        response = connection.getresponse()
        text = response.read().decode()
    except TimeoutError:
        return None
    finally:
        connection.close()
    if response.status != 200:  # 503: every database connection of the worker was taken
        return None
    for family in text_string_to_metric_families(text):
        if family.name == "portside_long_polls_waiting":
            return int(sum(sample.value for sample in family.samples))
    raise BenchError("/metrics has no portside_long_polls_waiting")


def gunicorn_rss(server: Server) -> int:
    """Resident memory of the master and every worker, in bytes."""
    pids = [server.process.pid, *server.worker_pids()] if server.process else []
    return sum(process_rss_bytes(pid) for pid in pids)


def propagation(
    loops: Sequence[AgentLoop], moment: float, wanted: dict[int, int], patience: float
) -> dict[str, Any]:
    """Wait until every affected agent has seen its new generation (or ``patience`` ends);
    the delays from the commit, in ms."""
    affected = [loop for loop in loops if loop.agent.host_id in wanted]
    deadline = time.perf_counter() + patience

    def delays() -> list[float]:
        found = []
        for loop in affected:
            target = wanted[loop.agent.host_id]
            seen = [at for generation, at in loop.seen.items() if generation >= target]
            if seen:
                found.append((min(seen) - moment) * 1000)
        return found

    while len(delays()) < len(affected) and time.perf_counter() < deadline:
        time.sleep(0.01)
    found = sorted(delays())
    return {
        "agents": len(affected),
        "seen": len(found),
        "p50_ms": round(statistics.median(found), 1) if found else None,
        "p99_ms": round(found[max(0, math.ceil(len(found) * 0.99) - 1)], 1) if found else None,
        "max_ms": round(found[-1], 1) if found else None,
    }


def long_polls(
    server: Server,
    *,
    engine: Engine,
    redis: Redis,
    agents: Sequence[Agent],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The fleet polls for ``--steady`` seconds (held polls, memory, CPU and the agents'
    outcomes sampled); then 10 hosts get a deployment at once, then 1,000 (or every host
    of a smaller fleet)."""
    idle_rss = gunicorn_rss(server)
    stop = threading.Event()
    loops = [AgentLoop(agent, args.wait, stop) for agent in agents]
    threads = [
        threading.Thread(target=loop.run, args=(server.port,), daemon=True, name="bench-agent")
        for loop in loops
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    patience = 2 * (args.wait + WAIT_MARGIN)
    try:
        # Every agent has its first snapshot (the fleet's start), then the steady state.
        wait_for_first = time.perf_counter() + patience
        while any(loop.generation is None for loop in loops):
            if time.perf_counter() > wait_for_first:
                break
            time.sleep(0.05)
        first_snapshots_s = time.perf_counter() - started
        window_start = time.perf_counter()
        before = cpu_snapshot(cpu_groups(server))
        held: list[int] = []
        unanswered_metrics = 0
        rss: list[int] = []
        while time.perf_counter() - window_start < args.steady:
            count = held_long_polls(server.port)
            if count is None:
                unanswered_metrics += 1
            else:
                held.append(count)
            rss.append(gunicorn_rss(server))
            time.sleep(1.0)
        window = time.perf_counter() - window_start
        used = cpu_used(before, cpu_snapshot(cpu_groups(server)))
        window_end = time.perf_counter()
        outcomes: dict[str, int] = {}
        for loop in loops:
            for at, what in loop.outcomes:
                if window_start <= at < window_end:
                    outcomes[what] = outcomes.get(what, 0) + 1
        chosen = random.sample(list(agents), min(10, len(agents)))
        moment, wanted = bump_hosts(engine, redis, {agent.host_id for agent in chosen})
        some = propagation(loops, moment, wanted, patience)
        many = agents[:FLEET_DEPLOYMENT_HOSTS]
        moment, wanted = bump_hosts(engine, redis, {agent.host_id for agent in many})
        every = propagation(loops, moment, wanted, patience)
    finally:
        stop.set()
    agent_minutes = len(agents) * window / 60
    return {
        "agents": len(agents),
        "wait_s": args.wait,
        "patience_s": patience,
        "threads_available": server_threads(server),
        "first_snapshots_s": round(first_snapshots_s, 1),
        "without_first_snapshot": sum(loop.generation is None for loop in loops),
        "window_s": round(window, 1),
        "held_max": max(held, default=0),
        "held_median": statistics.median(held) if held else 0,
        "metrics_unanswered": unanswered_metrics,
        "outcomes": dict(sorted(outcomes.items())),
        "rss_idle_mb": round(idle_rss / 2**20, 1),
        "rss_mb": round(max(rss, default=0) / 2**20, 1),
        "rss_kb_per_agent": round((max(rss, default=0) - idle_rss) / 1024 / len(agents), 1),
        "cpu_ms_per_agent_minute": {
            group: round(seconds * 1000 / agent_minutes, 2)
            for group, seconds in used.items()
            if group in ("gunicorn", "postgres", "redis", "machine")
        },
        "polls_per_agent_minute": round(
            sum(n for what, n in outcomes.items() if what in ("200", "304")) / agent_minutes, 2
        ),
        "ten_hosts": some,
        "fleet_hosts": every,
    }


def long_poll_threads(args: argparse.Namespace, env: dict[str, str]) -> int:
    """Threads per worker for the fleet: ``--long-poll-threads``, else enough that every
    agent's poll is held with some to spare for the rest of the API."""
    if args.long_poll_threads is not None:
        return int(args.long_poll_threads)
    workers = gunicorn_setting("workers", env)
    # The kernel does not share connections evenly between workers: room for the
    # busier one's share.
    needed = math.ceil(int(args.agents) * LONG_POLL_UNEVEN / workers) + LONG_POLL_SPARE_THREADS
    return max(gunicorn_setting("threads", env), needed)


def warmup_count(args: argparse.Namespace) -> int:
    """Enough polls that every worker has seen every host's token (None: 30 per host)."""
    return int(args.warmup) if args.warmup is not None else 30 * int(args.hosts)


def server_threads(server: Server) -> int:
    return gunicorn_setting("workers", server.env) * gunicorn_setting("threads", server.env)


# ------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """Both servers up at once; rounds alternate bare and Portside so both see the same
    machine (other work on it moves both); then the long polls."""
    result: dict[str, Any] = {"runs": [], "problems": []}
    runs: list[PollRun] = result["runs"]
    redis = Redis.from_url(redis_url(), socket_connect_timeout=2, socket_timeout=10)
    redis.flushdb()
    try:
        with temporary_database(admin_database_url(), "portside_bench_agents_") as url:
            engine = create_engine(url)
            bare = Server("bare", "bench.agents:create_bare_app()", {}, work_dir / "bare.log")
            bare_sync = Server(
                "bare-sync", "bench.agents:create_bare_app()", {}, work_dir / "bare-sync.log"
            )
            portside = Server("portside", "controlplane.wsgi:app", {}, work_dir / "portside.log")
            try:
                migrate.upgrade(engine)
                env = server_env(url, work_dir / "data", args.threads, args.workers)
                bare.env = portside.env = env
                bare_sync.env = {**env, "GUNICORN_CMD_ARGS": SYNC_WORKERS}
                result["gunicorn"] = {
                    "workers": gunicorn_setting("workers", env),
                    "threads": gunicorn_setting("threads", env),
                    "cpus": os.cpu_count(),
                }
                agents = create_hosts(engine, args.hosts)
                bare.start()
                portside.start()
                if wrkload.available():
                    bare_sync.start()
                else:
                    result["problems"].append("wrk is not installed (apt-get install wrk)")
                bare_etags = {agent.host_id: BARE_ETAG for agent in agents}
                bare_batch = poll_requests(bare.port, agents, bare_etags, args.requests)
                bare_warm = poll_requests(bare.port, agents, bare_etags, warmup_count(args))
                sizes = [args.small, args.large] if args.large > args.small else [args.small]
                for size in sizes:
                    seed_environments(engine, agents, size)
                    forget_cached_generations(redis, agents)
                    etags, took = current_etags(portside.port, agents)
                    result.setdefault("full_snapshot_ms", {})[str(size)] = {
                        "p50": round(statistics.median(took), 2),
                        "max": round(max(took), 2),
                        "environments_per_host": round(size / len(agents), 1),
                    }
                    batch = poll_requests(portside.port, agents, etags, args.requests)
                    warm = poll_requests(portside.port, agents, etags, warmup_count(args))
                    for round_number in range(args.rounds):
                        runs.append(
                            measure_polls(
                                f"bare@{size}",
                                server=bare,
                                warmup=bare_warm,
                                requests=bare_batch,
                                args=args,
                                engine=None,
                                environments=size,
                            )
                        )
                        # Fresh cached generations (30 s in Redis) for the measurement.
                        generations.announce(engine, redis, {agent.host_id for agent in agents})
                        runs.append(
                            measure_polls(
                                f"portside@{size}",
                                server=portside,
                                warmup=warm,
                                requests=batch,
                                args=args,
                                # Transactions are counted in the first round only (slow).
                                engine=engine if round_number == 0 else None,
                                environments=size,
                            )
                        )
                    if wrkload.available():
                        result.setdefault("wrk", {})[str(size)] = measure_wrk(
                            bare_sync=bare_sync,
                            portside=portside,
                            agents=agents,
                            etags=etags,
                            args=args,
                            work_dir=work_dir,
                        )
                bare.stop()
                bare_sync.stop()
                if args.agents:
                    extra = max(0, args.agents - len(agents))
                    fleet = agents[: args.agents] + create_hosts(engine, extra, len(agents))
                    threads = long_poll_threads(args, env)
                    if threads != gunicorn_setting("threads", env):
                        portside.stop()
                        portside.env = {**env, "GUNICORN_THREADS": str(threads)}
                        portside.start()
                    result["long_poll"] = long_polls(
                        portside, engine=engine, redis=redis, agents=fleet, args=args
                    )
            except Exception as exc:
                result["problems"].append(f"{type(exc).__name__}: {exc}")
                result["problems"].append(f"portside log:\n{portside.log_tail()}")
            finally:
                bare.stop()
                bare_sync.stop()
                portside.stop()
                engine.dispose()
    finally:
        redis.flushdb()
        redis.close()
    for run in runs:
        result["problems"] += [f"{run.name}: {problem}" for problem in run.problems]
    return result


@dataclass
class Target:
    """The rounds of one target, pooled."""

    name: str
    runs: list[PollRun]

    @property
    def requests_per_second(self) -> float:
        return statistics.median(run.load.requests_per_second for run in self.runs)

    def percentile(self, p: float) -> float:
        latencies = sorted(ms for run in self.runs for ms in run.load.latencies_ms)
        if not latencies:
            return math.nan
        return latencies[max(1, math.ceil(p / 100 * len(latencies))) - 1]

    def cpu_ms(self, group: str) -> float:
        return statistics.median(run.cpu_ms.get(group, 0.0) for run in self.runs)

    @property
    def transactions(self) -> float | None:
        counted = [run.db_transactions_per_request for run in self.runs]
        return next((value for value in counted if value is not None), None)


def targets(runs: Sequence[PollRun]) -> dict[str, Target]:
    grouped: dict[str, Target] = {}
    for run in runs:
        grouped.setdefault(run.name, Target(run.name, [])).runs.append(run)
    return grouped


def verdict(grouped: dict[str, Target], args: argparse.Namespace) -> dict[str, Any]:
    small, large = args.small, max(args.small, args.large)
    ratio_small = (
        grouped[f"portside@{small}"].requests_per_second
        / grouped[f"bare@{small}"].requests_per_second
    )
    ratio_large = (
        grouped[f"portside@{large}"].requests_per_second
        / grouped[f"bare@{large}"].requests_per_second
    )
    raw_growth = (
        grouped[f"portside@{large}"].requests_per_second
        / grouped[f"portside@{small}"].requests_per_second
    )
    growth = ratio_large / ratio_small
    return {
        "ratio": round(ratio_small, 3),
        "ratio_at_large": round(ratio_large, 3),
        "ratio_target": TARGET_RATIO,
        "ratio_pass": ratio_small >= TARGET_RATIO,
        "p99_bare_ms": round(grouped[f"bare@{small}"].percentile(99), 2),
        "p99_portside_ms": round(grouped[f"portside@{small}"].percentile(99), 2),
        "p99_portside_large_ms": round(grouped[f"portside@{large}"].percentile(99), 2),
        # Each size relative to the bare runs interleaved with it, so that load from
        # elsewhere on the machine cancels out; the raw ratio is shown too.
        "large_over_small": round(growth, 3),
        "large_over_small_raw": round(raw_growth, 3),
        # "close to 1": within the run-to-run noise of this machine.
        "size_pass": growth >= 0.85,
    }


def render_long_poll(figures: dict[str, Any]) -> list[str]:
    cpu = figures["cpu_ms_per_agent_minute"]
    lines = [
        "",
        f"Long polls: {figures['agents']} agents polling like hostagent (?wait="
        f"{figures['wait_s']}, giving up after {figures['wait_s'] + WAIT_MARGIN:.0f} s) on "
        f"{figures['threads_available']} gunicorn threads; all had a first snapshot after "
        f"{figures['first_snapshots_s']} s ({figures['without_first_snapshot']} never did)",
        f"  steady state, {figures['window_s']} s: long polls held at once: median "
        f"{figures['held_median']}, max {figures['held_max']} ({figures['metrics_unanswered']} "
        f"/metrics reads found no free thread); outcomes {figures['outcomes']}; "
        f"{figures['polls_per_agent_minute']} answered polls per agent-minute",
        f"  gunicorn RSS {figures['rss_idle_mb']} MB before the fleet, {figures['rss_mb']} MB "
        f"with it: {figures['rss_kb_per_agent']} KB per agent",
        "  CPU ms per agent-minute: "
        + ", ".join(f"{group} {value}" for group, value in cpu.items()),
    ]
    for key, label in (("ten_hosts", "10 hosts"), ("fleet_hosts", "many hosts")):
        marks = figures[key]
        lines.append(
            f"  a deployment to {label} at once: {marks['seen']}/{marks['agents']} agents saw "
            f"it within {figures['patience_s']:.0f} s; p50 {marks['p50_ms']} ms, p99 "
            f"{marks['p99_ms']} ms, max {marks['max_ms']} ms after the commit"
        )
    return lines


def report(result: dict[str, Any], args: argparse.Namespace) -> bool:
    runs: list[PollRun] = result.pop("runs")
    grouped = targets(runs)
    large = max(args.small, args.large)
    ok = (
        not result["problems"]
        and f"portside@{args.small}" in grouped
        and f"portside@{large}" in grouped
    )
    result["runs"] = [run.summary() for run in runs]
    if ok:
        result["verdict"] = verdict(grouped, args)
    if args.json:
        print(json.dumps(result, indent=2))
        return ok
    gunicorn = result.get("gunicorn", {})
    print(
        f"Desired-state polls answered 304: {args.requests} per run over {args.hosts} hosts "
        f"(each with its own token and ETag), {args.concurrency} senders, warm-up "
        f"{warmup_count(args)}, {args.rounds} rounds alternating bare and Portside; gunicorn "
        f"{gunicorn.get('workers')} workers x {gunicorn.get('threads')} threads, "
        f"{gunicorn.get('cpus')} CPUs"
    )
    print()
    print(
        f"{'target':<16} {'req/s (median; rounds)':<34} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'db tx/req':>9}  CPU ms/req: gunicorn postgres redis other"
    )
    for target in grouped.values():
        rounds = " ".join(f"{run.load.requests_per_second:.0f}" for run in target.runs)
        tx = "—" if target.transactions is None else f"{target.transactions}"
        cpu = " ".join(
            f"{target.cpu_ms(group):.3f}" for group in ("gunicorn", "postgres", "redis", "other")
        )
        rate = f"{target.requests_per_second:.0f} ({rounds})"
        print(
            f"{target.name:<16} {rate:<34} {target.percentile(50):>7.2f} "
            f"{target.percentile(99):>7.2f} {tx:>9}  {cpu}"
        )
    for size, figures in result.get("full_snapshot_ms", {}).items():
        print(
            f"full snapshot (200) at {size} environments "
            f"({figures['environments_per_host']} per host): p50 {figures['p50']} ms, "
            f"max {figures['max']} ms"
        )
    for size, rounds in result.get("wrk", {}).items():
        marks = wrk_ratio(rounds)
        rates = " / ".join(
            f"{name} " + " ".join(f"{run['requests_per_second']:.0f}" for run in runs)
            for name, runs in rounds.items()
        )
        print(
            f"wrk at {size} environments (req/s per round: {rates}): Portside/bare-sync "
            f"{marks['ratio']:.3f}, p99 {marks['p99_portside_ms']} ms vs "
            f"{marks['p99_bare_ms']} ms, {marks['unexpected']} unexpected answers or errors"
        )
    long_poll = result.get("long_poll")
    if long_poll:
        for line in render_long_poll(long_poll):
            print(line)
    print()
    for problem in result["problems"]:
        print(f"FAILED: {problem}")
    if not ok:
        print("the run broke: no verdict")
        return ok
    marks = result["verdict"]
    print(
        f"{'PASS' if marks['ratio_pass'] else 'FAIL'} vs target: Portside 304 / bare Flask "
        f"throughput {marks['ratio']:.3f} at {args.small} environments, "
        f"{marks['ratio_at_large']:.3f} at {large} (target >= {TARGET_RATIO}); p99 "
        f"{marks['p99_portside_ms']:.2f} ms vs {marks['p99_bare_ms']:.2f} ms"
    )
    print(
        f"{'PASS' if marks['size_pass'] else 'FAIL'} vs target: 304 throughput at "
        f"{large} / at {args.small} environments {marks['large_over_small']:.3f} relative to "
        f"bare ({marks['large_over_small_raw']:.3f} raw) (target: close to 1)"
    )
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench agents",
        description="Benchmark the agents' desired-state polls (304 path, long polls).",
    )
    parser.add_argument("--requests", type=int, default=5000, help="polls per measured run")
    parser.add_argument("--warmup", type=int, help="warm-up polls per run (default: 30 per host)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent senders")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each target per size")
    parser.add_argument("--hosts", type=int, default=200, help="hosts (agents) in the database")
    parser.add_argument("--small", type=int, default=10, help="environments, first size")
    parser.add_argument("--large", type=int, default=10_000, help="environments, second size")
    parser.add_argument(
        "--agents", type=int, default=2000, help="long-polling agents for (c); 0 skips it"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="gunicorn workers of every server (one node)"
    )
    parser.add_argument("--wrk-seconds", type=float, default=10.0, help="seconds of each wrk round")
    parser.add_argument(
        "--wait",
        type=int,
        default=int(DEFAULT_INTERVAL),
        help="the long polls' ?wait= (default: the agent's default interval)",
    )
    parser.add_argument(
        "--steady", type=float, default=30.0, help="seconds the fleet is watched polling"
    )
    parser.add_argument(
        "--long-poll-threads",
        type=int,
        help="GUNICORN_THREADS for the long polls only (default: enough for --agents)",
    )
    parser.add_argument(
        "--threads", type=int, help="GUNICORN_THREADS for both servers (default: the config's)"
    )
    parser.add_argument(
        "--time-limit", type=float, default=120.0, help="seconds allowed per load run"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep-dir", type=Path, help="keep server logs here (default: temporary)")
    args = parser.parse_args(argv)
    if not 1 <= args.hosts <= 2000:
        parser.error("--hosts must be between 1 and 2000")
    if not 0 <= args.agents <= 5000:
        parser.error("--agents must be between 0 and 5000")
    if not 1 <= args.small <= args.large <= 100_000:
        parser.error("need 1 <= --small <= --large <= 100000")
    if (
        args.requests < 1
        or args.concurrency < 1
        or not 1 <= args.rounds <= 10
        or (args.warmup or 0) < 0
    ):
        parser.error("--requests and --concurrency must be positive, --warmup not negative")
    if not 1 <= args.wait <= 60:
        parser.error("--wait must be between 1 and 60")
    return args


@contextlib.contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="portside-bench-agents-") as temp:
        yield Path(temp)


# The fleet's targets (issue 20): 2,000 agents on one web node of 2 workers, each poll held
# (a deployment seen at once, not a tick later), none given up; a deployment to 1,000
# hosts seen by the last agent within 3 s.
TARGET_RSS_KB_PER_AGENT = 128.0
TARGET_CPU_MS_PER_AGENT_MINUTE = 8.0
TARGET_ONE_DEPLOYMENT_MS = 1000.0
FLEET_DEPLOYMENT_HOSTS = 1000
TARGET_FLEET_MS = 3000.0
TARGET_FLEET_P50_MS = 1500.0
LONG_POLL_UNEVEN = 1.2  # the busier worker's share of the agents, over an even share
LONG_POLL_SPARE_THREADS = 50  # per worker, for the rest of the API
METRICS_PATIENCE = 30.0  # seconds: /metrics waits for a free thread like any request
# An agent between two polls is not held: after each answer it waits up to a tenth of
# its wait (jitter), so at any moment about 5 % of a steady fleet is between polls.
HELD_SHARE = 0.95


def poll_figures(result: dict[str, Any], args: argparse.Namespace) -> list[Figure]:
    """The 304 path's figures (after :func:`report`, which adds the verdict)."""
    large = max(args.small, args.large)
    ratio = (f"agents: Portside/bare 304 throughput ({args.small} envs)", f">= {TARGET_RATIO}")
    size = (f"agents: 304 throughput at {large} / at {args.small} envs", ">= 0.85 (not growing)")
    tx = (f"agents: db transactions per 304 at {large} envs", "< 0.01 (ours)")
    marks = result.get("verdict")
    counted = [
        run["db_transactions_per_request"]
        for run in result.get("runs", [])
        if run["name"] == f"portside@{large}" and run["db_transactions_per_request"] is not None
    ]
    if not marks or not counted:
        return [broken(*ratio), broken(*size), broken(*tx)]
    growth = f"{marks['large_over_small']:.3f} (raw {marks['large_over_small_raw']:.3f})"
    return [
        Figure(ratio[0], f"{marks['ratio']:.3f}", ratio[1], marks["ratio_pass"]),
        Figure(size[0], growth, size[1], marks["size_pass"]),
        Figure(tx[0], f"{counted[0]}", tx[1], counted[0] < 0.01),
    ]


def wrk_figures(result: dict[str, Any], args: argparse.Namespace) -> list[Figure]:
    """Portside's 304s over a bare Flask 204 on sync workers, from wrk, at each size."""
    found = []
    for size in sorted({args.small, max(args.small, args.large)}):
        name = f"agents: 304 polls / bare 204 (sync x{args.workers}, wrk), {size} envs"
        target = f">= {TARGET_WRK_RATIO}"
        rounds = result.get("wrk", {}).get(str(size))
        if not rounds:
            found.append(broken(name, target))
            continue
        marks = wrk_ratio(rounds)
        measured = (
            f"{marks['ratio']:.3f} (p99 {marks['p99_portside_ms']:.1f} vs "
            f"{marks['p99_bare_ms']:.1f} ms)"
        )
        met = marks["ratio"] >= TARGET_WRK_RATIO and marks["unexpected"] == 0
        found.append(Figure(name, measured, target, met))
    return found


def fleet_figures(fleet: dict[str, Any] | None, agents: int) -> list[Figure]:
    """The long-polling fleet's figures."""
    deployed = min(agents, FLEET_DEPLOYMENT_HOSTS)
    names = {
        "held": (
            f"agents: long polls held at once ({agents} agents, one node)",
            f">= {math.ceil(agents * HELD_SHARE)}",
        ),
        "gave_up": ("agents: polls the agents gave up or failed", "0 (ours)"),
        "ten_hosts": (
            "agents: deployment to 10 hosts -> all 10 seen",
            f"< {TARGET_ONE_DEPLOYMENT_MS:.0f} ms (ours)",
        ),
        "fleet_hosts": (
            f"agents: deployment to {deployed} hosts -> last agent sees it",
            f"< {TARGET_FLEET_MS:.0f} ms, p50 < {TARGET_FLEET_P50_MS:.0f}",
        ),
        "rss": ("agents: gunicorn RSS per agent", f"<= {TARGET_RSS_KB_PER_AGENT:.0f} KB"),
        "cpu": (
            "agents: gunicorn CPU per agent-minute",
            f"<= {TARGET_CPU_MS_PER_AGENT_MINUTE:.0f} ms",
        ),
    }
    if not fleet:
        return [broken(*names[key]) for key in names]
    failed = sum(n for what, n in fleet["outcomes"].items() if what not in ("200", "304"))
    polls = sum(fleet["outcomes"].values())
    cpu = fleet["cpu_ms_per_agent_minute"]["gunicorn"]
    found = [
        Figure(
            names["held"][0],
            f"max {fleet['held_max']} on {fleet['threads_available']} threads",
            names["held"][1],
            fleet["held_max"] >= agents * HELD_SHARE,
        ),
        Figure(names["gave_up"][0], f"{failed} of {polls} polls", names["gave_up"][1], failed == 0),
    ]
    for key, limit, p50_limit in (
        ("ten_hosts", TARGET_ONE_DEPLOYMENT_MS, math.inf),
        ("fleet_hosts", TARGET_FLEET_MS, TARGET_FLEET_P50_MS),
    ):
        marks = fleet[key]
        measured = (
            f"max {marks['max_ms']:.0f} ms, p50 {marks['p50_ms']:.0f} "
            f"({marks['seen']}/{marks['agents']} seen)"
            if marks["max_ms"] is not None
            else f"0/{marks['agents']} seen"
        )
        met = (
            marks["seen"] == marks["agents"]
            and (marks["max_ms"] or math.inf) < limit
            and (marks["p50_ms"] or math.inf) < p50_limit
        )
        found.append(Figure(names[key][0], measured, names[key][1], met))
    rss = fleet["rss_kb_per_agent"]
    return [
        *found,
        Figure(
            names["rss"][0],
            f"{rss:.0f} KB (total {fleet['rss_mb']:.0f} MB)",
            names["rss"][1],
            rss <= TARGET_RSS_KB_PER_AGENT,
        ),
        Figure(
            names["cpu"][0], f"{cpu:.1f} ms", names["cpu"][1], cpu <= TARGET_CPU_MS_PER_AGENT_MINUTE
        ),
    ]


def figures(result: dict[str, Any], args: argparse.Namespace) -> list[Figure]:
    found = [*poll_figures(result, args), *wrk_figures(result, args)]
    return [*found, *fleet_figures(result.get("long_poll"), args.agents)] if args.agents else found


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
