"""Load from outside with wrk: a C client at saturation, not Python senders on the same cores.

Each request is a signed delivery with an ``X-GitHub-Delivery`` of its own: GitHub signs
the body only, so one body and its signature serve every request while each delivery id
is used once (``<run>-<thread>-<counter>``); the server still verifies the HMAC of every
body and stores every delivery. wrk counts only answered requests; a delivery in flight
when the clock stops may still be stored, so a run stores at least ``requests`` rows.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.common import HOST

DELIVERY_HEADER = "X-GitHub-Delivery"

_SCRIPT = """
local body_path, prefix, out_path = %(body)s, %(prefix)s, %(out)s
local headers = %(headers)s
local threads, body, counter = 0, nil, 0  -- tid: set by setup() in each thread

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  local file = assert(io.open(body_path, "rb"))
  body = file:read("*a")
  file:close()
end

function request()
  counter = counter + 1
  headers["%(guid)s"] = prefix .. "-" .. tid .. "-" .. counter
  return wrk.format("POST", %(path)s, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = assert(io.open(out_path, "w"))
  out:write(string.format(
    '{"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, "write": %%d, ' ..
    '"status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "mean_us": %%f}',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
  out:close()
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua(value: str) -> str:
    """A Lua string literal (JSON's escapes are Lua's, for the text we put in)."""
    return json.dumps(value)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]  # connect/read/write/timeout, and status: answers >= 400
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    prefix: str  # every delivery id of the run starts with it

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def describe(self) -> str:
        return (
            f"{self.requests} in {self.seconds:.1f} s: {self.requests_per_second:.0f} req/s, "
            f"p50 {self.p50_ms:.1f} ms, p90 {self.p90_ms:.1f}, p99 {self.p99_ms:.1f}, "
            f"max {self.max_ms:.1f}; errors {self.errors}"
        )


def run_wrk(
    port: int,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    seconds: float,
    connections: int = 8,
    threads: int = 2,
) -> WrkResult:
    """``connections`` keep-alive connections over ``threads`` wrk threads for ``seconds``."""
    prefix = secrets.token_hex(6)
    with tempfile.TemporaryDirectory(prefix="portside-bench-wrk-") as temp:
        body_path, out_path, script = (
            Path(temp, "body"),
            Path(temp, "out.json"),
            Path(temp, "s.lua"),
        )
        body_path.write_bytes(body)
        table = ", ".join(f"[{_lua(name)}] = {_lua(value)}" for name, value in headers.items())
        script.write_text(
            _SCRIPT
            % {
                "body": _lua(str(body_path)),
                "prefix": _lua(prefix),
                "out": _lua(str(out_path)),
                "headers": "{" + table + "}",
                "guid": DELIVERY_HEADER,
                "path": _lua(path),
            }
        )
        command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s"]
        command += ["--timeout", "10s", "-s", str(script), f"http://{HOST}:{port}{path}"]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        if completed.returncode != 0 or not out_path.exists():
            raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr[-2000:]}")
        data = json.loads(out_path.read_text())
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors={
            name: data[name]
            for name in ("connect", "read", "write", "status", "timeout")
            if data[name]
        },
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        prefix=prefix,
    )
