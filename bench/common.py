"""What the benchmarks share: a throw-away database, gunicorn servers, a lean load client.

The load client is deliberately primitive: each sender is a process of its own with one
keep-alive socket, the requests are built (and signed) before the clock starts, and a
response is parsed only as far as its status line, Content-Length and Connection
headers. So the client costs a few tens of microseconds per request and is not what the
benchmark measures.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import multiprocessing as mp
import os
import queue
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
HOST = "127.0.0.1"
# One Redis database for every benchmark (they run one at a time and flush it before and
# after), chosen apart from the test suite's (PORTSIDE_TEST_REDIS_DB, 13 by default).
BENCH_REDIS_DB_VARIABLE = "PORTSIDE_BENCH_REDIS_DB"
DEFAULT_BENCH_REDIS_DB = 10
TEST_SUITE_REDIS_DB = 13


def redis_url() -> str:
    """The benchmarks' Redis database; refused when it is the test suite's, which is flushed."""
    db = int(os.environ.get(BENCH_REDIS_DB_VARIABLE, DEFAULT_BENCH_REDIS_DB))
    suite = int(os.environ.get("PORTSIDE_TEST_REDIS_DB", TEST_SUITE_REDIS_DB))
    if db == suite:
        raise SystemExit(
            f"{BENCH_REDIS_DB_VARIABLE}={db} is the test suite's Redis database; "
            "the benchmarks flush theirs: choose another"
        )
    base = os.environ.get("PORTSIDE_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/{db}"


@dataclass(frozen=True)
class Figure:
    """One line of the final table: what was measured against what it should be."""

    name: str
    measured: str
    target: str
    met: bool | None  # None: reported beside the others, with no target of its own


def broken(name: str, target: str) -> Figure:
    """A figure the run could not measure: it counts as not met."""
    return Figure(name, "BROKEN: not measured", target, False)


def render_figures(figures: Sequence[Figure]) -> list[str]:
    """The figures as one fixed-width table: figure | measured | target | met?"""
    rows = [("figure", "measured", "target", "met?")]
    rows += [
        (f.name, f.measured, f.target, {True: "yes", False: "NO", None: "-"}[f.met])
        for f in figures
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return [line.rstrip() for line in lines]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def temporary_database(admin_url: str, prefix: str = "portside_bench_") -> Iterator[str]:
    """Create a PostgreSQL database of our own; drop it on the way out, even on errors."""
    url = make_url(admin_url)
    name = f"{prefix}{secrets.token_hex(4)}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                # FORCE: a server we started and failed to stop must not keep it alive.
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


class Server:
    """A gunicorn master serving ``app`` with the project's config, logging to a file."""

    def __init__(
        self,
        name: str,
        app: str,
        env: Mapping[str, str],
        log_path: Path,
        plain_workers: int | None = None,
    ) -> None:
        """``plain_workers``: gunicorn's defaults (sync workers, no access log) with that
        many workers instead of the project's config: the best plain configuration."""
        self.name = name
        self.app = app
        self.env = dict(env)
        self.log_path = log_path
        self.plain_workers = plain_workers
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def command(self) -> list[str]:
        if self.plain_workers is None:
            config = ["-c", str(GUNICORN_CONF)]
        else:  # gunicorn's defaults: sync workers, no access log
            config = ["--workers", str(self.plain_workers), "--worker-class", "sync"]
            config += ["--threads", "1"]
        return [
            sys.executable,
            "-m",
            "gunicorn",
            *config,
            "--bind",
            f"{HOST}:{self.port}",
            self.app,
        ]

    def start(self, timeout: float = 60.0) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches only it
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float, path: str = "/healthz") -> None:
        """Wait until every worker is up and the app answers ``path`` with 200."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: gunicorn exited while starting\n{self.log_tail()}"
                )
            try:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
                try:
                    connection.request("GET", path)
                    status = connection.getresponse().status
                finally:
                    connection.close()
                if status == 200 and len(self.worker_pids()) >= self.expected_workers():
                    return
                last_error = f"status {status}, {len(self.worker_pids())} workers"
            except OSError as exc:
                last_error = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(
            f"{self.name}: not ready after {timeout:.0f}s ({last_error})\n{self.log_tail()}"
        )

    def expected_workers(self) -> int:
        if self.plain_workers is not None:
            return self.plain_workers
        return gunicorn_setting("workers", self.env)

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def stop(self, timeout: float = 40.0) -> None:
        """TERM the master (graceful), KILL its process group when it takes too long."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text_lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text_lines[-lines:])


def gunicorn_setting(name: str, env: Mapping[str, str]) -> int:
    """An integer setting of deploy/gunicorn.conf.py as it resolves under ``env``."""
    namespace: dict[str, Any] = {"__file__": str(GUNICORN_CONF)}
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        exec(compile(GUNICORN_CONF.read_text(), str(GUNICORN_CONF), "exec"), namespace)  # noqa: S102
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return int(namespace[name])


# ------------------------------------------------------------------------------------
# CPU accounting
# ------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def session_pids(session_id: int) -> list[int]:
    """Every process of a session (a command started with ``start_new_session``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) == session_id:
                pids.append(int(entry.name))
    return pids


def pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs of the machine spent busy (not idle, not iowait) so far."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


@dataclass
class CpuSnapshot:
    by_group: dict[str, float]
    children: float
    machine: float


def cpu_snapshot(groups: Mapping[str, Sequence[int]]) -> CpuSnapshot:
    own_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSnapshot(
        by_group={
            name: sum(process_cpu_seconds(pid) for pid in pids) for name, pids in groups.items()
        },
        children=own_children.ru_utime + own_children.ru_stime,
        machine=machine_busy_seconds(),
    )


def cpu_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds between two snapshots: per group, the load client, everything else."""
    used = {name: after.by_group[name] - before.by_group.get(name, 0.0) for name in after.by_group}
    used["client"] = after.children - before.children
    machine = after.machine - before.machine
    used["other"] = max(0.0, machine - sum(used.values()))
    used["machine"] = machine
    return used


# ------------------------------------------------------------------------------------
# The load client
# ------------------------------------------------------------------------------------


def build_request(
    port: int, path: str, headers: Mapping[str, str], body: bytes, method: str = "POST"
) -> bytes:
    """A complete HTTP/1.1 keep-alive request, ready for ``sendall``."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Accept: */*", "Connection: keep-alive"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _read_response(sock: socket.socket) -> tuple[int, bool]:
    """Read one response; return its status and whether the connection stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection before answering")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    keep_alive = not status_line.startswith(b"HTTP/1.0")
    chunked = False
    for line in header_lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            keep_alive = value.strip().lower() == b"keep-alive"
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if chunked:
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection inside a body")
            rest += chunk
    else:
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection inside a body")
            rest += chunk
    return status, keep_alive


def _connect(port: int, io_timeout: float) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=io_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass
class SenderReport:
    started: float
    finished: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _sender(
    *,
    port: int,
    requests: Sequence[bytes],
    counter: Synchronized[int],
    barrier: Barrier,
    results: mp.Queue[SenderReport],
    time_limit: float,
    io_timeout: float,
) -> None:
    """One sender: take the next request off the shared counter until none are left."""
    report = SenderReport(started=time.perf_counter(), finished=0.0)
    sock: socket.socket | None = None
    try:
        sock = _connect(port, io_timeout)
        barrier.wait(timeout=60)
        report.started = time.perf_counter()
        give_up_at = report.started + time_limit
        while True:
            with counter.get_lock():
                index = counter.value
                counter.value += 1
            if index >= len(requests):
                break
            if time.perf_counter() > give_up_at:
                report.errors.append(f"time limit of {time_limit:.0f}s reached")
                break
            if sock is None:
                sock = _connect(port, io_timeout)
            began = time.perf_counter_ns()
            try:
                sock.sendall(requests[index])
                status, keep_alive = _read_response(sock)
            except (OSError, ValueError, IndexError) as exc:
                report.errors.append(f"request {index}: {exc!r}")
                sock.close()
                sock = None
                continue
            report.latencies_ms.append((time.perf_counter_ns() - began) / 1e6)
            report.statuses[status] = report.statuses.get(status, 0) + 1
            if not keep_alive:
                sock.close()
                sock = None
    except Exception as exc:
        report.errors.append(f"sender failed: {exc!r}")
    finally:
        report.finished = time.perf_counter()
        if sock is not None:
            sock.close()
        results.put(report)


@dataclass
class LoadResult:
    """What one load run measured."""

    sent: int
    elapsed: float
    latencies_ms: list[float]
    statuses: dict[int, int]
    errors: list[str]

    @property
    def answered(self) -> int:
        return len(self.latencies_ms)

    @property
    def requests_per_second(self) -> float:
        return self.answered / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in ms."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]

    @property
    def mean_ms(self) -> float:
        return sum(self.latencies_ms) / len(self.latencies_ms) if self.latencies_ms else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.sent,
            "answered": self.answered,
            "elapsed_s": round(self.elapsed, 4),
            "requests_per_second": round(self.requests_per_second, 1),
            "latency_ms": {
                "mean": round(self.mean_ms, 2),
                "p50": round(self.percentile(50), 2),
                "p95": round(self.percentile(95), 2),
                "p99": round(self.percentile(99), 2),
                "max": round(self.percentile(100), 2),
            },
            "statuses": {str(code): count for code, count in sorted(self.statuses.items())},
            "errors": self.errors[:20],
        }


def run_load(
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    time_limit: float,
    io_timeout: float = 30.0,
) -> LoadResult:
    """Send ``requests`` to 127.0.0.1:``port`` from ``concurrency`` sender processes.

    Every sender connects first; the clock starts when all are connected and stops when
    the last one is done. Bounded by ``time_limit`` seconds.
    """
    context = mp.get_context("fork")
    counter: Synchronized[int] = context.Value("q", 0)
    barrier = context.Barrier(concurrency)
    results: mp.Queue[SenderReport] = context.Queue()
    senders = [
        context.Process(
            target=_sender,
            kwargs={
                "port": port,
                "requests": requests,
                "counter": counter,
                "barrier": barrier,
                "results": results,
                "time_limit": time_limit,
                "io_timeout": io_timeout,
            },
            name=f"bench-sender-{number}",
            daemon=True,
        )
        for number in range(concurrency)
    ]
    for sender in senders:
        sender.start()
    reports: list[SenderReport] = []
    errors: list[str] = []
    give_up_at = time.monotonic() + time_limit + io_timeout + 70
    try:
        while len(reports) < concurrency:
            remaining = give_up_at - time.monotonic()
            if remaining <= 0:
                errors.append(f"{concurrency - len(reports)} senders did not report in time")
                break
            try:
                reports.append(results.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                alive = sum(sender.is_alive() for sender in senders)
                if alive + len(reports) < concurrency and results.empty():
                    errors.append("a sender died without reporting")
                    break
    finally:
        for sender in senders:
            sender.join(timeout=5)
            if sender.is_alive():
                sender.kill()
                sender.join(timeout=5)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    for report in reports:
        latencies += report.latencies_ms
        errors += report.errors
        for status, count in report.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    elapsed = (
        max(report.finished for report in reports) - min(report.started for report in reports)
        if reports
        else 0.0
    )
    unanswered = len(requests) - len(latencies)
    if unanswered and not errors:
        errors.append(f"{unanswered} requests were not answered")
    return LoadResult(len(requests), elapsed, latencies, statuses, errors)
