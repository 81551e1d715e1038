"""Load from outside with wrk: requests/s and latency percentiles at saturation.

wrk (Debian's package ``wrk``) is a C load generator; each of its threads drives its own
connections and cycles through the requests given here (a Lua script built per run),
so each request can carry its own headers (one host's token and ETag, say).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import HOST

WRK = "wrk"
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


class WrkMissing(RuntimeError):
    """wrk is not installed (``apt-get install wrk``)."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    unexpected: int  # answers other than 2xx/3xx
    socket_errors: int

    def summary(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "requests_per_second": round(self.requests_per_second, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "unexpected": self.unexpected,
            "socket_errors": self.socket_errors,
        }


def available() -> bool:
    return shutil.which(WRK) is not None


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def script(path: str, headers: Sequence[Mapping[str, str]]) -> str:
    """A wrk script sending GET ``path`` with each header set in turn."""
    lines = ["local requests = {}"]
    for one in headers:
        table = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in one.items())
        lines.append(f"table.insert(requests, wrk.format('GET', {_lua_string(path)}, {{{table}}}))")
    lines += [
        "local turn = 0",
        "request = function()",
        "  turn = turn % #requests + 1",
        "  return requests[turn]",
        "end",
    ]
    return "\n".join(lines) + "\n"


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse(output: str) -> WrkResult:
    """wrk's report (with ``--latency``) as numbers."""
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+(?:us|ms|s|m))\s*$", output, re.M))
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not (percentiles and total and rate):
        raise ValueError(f"not a wrk report:\n{output}")
    unexpected = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests=int(total.group(1)),
        requests_per_second=float(rate.group(1)),
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        unexpected=int(unexpected.group(1)) if unexpected else 0,
        socket_errors=sum(map(int, errors.groups())) if errors else 0,
    )


def run(
    port: int,
    path: str,
    headers: Sequence[Mapping[str, str]],
    *,
    work_dir: Path,
    seconds: float,
    connections: int = 8,
    threads: int = 2,
) -> WrkResult:
    """Saturate ``path`` for ``seconds`` with ``connections`` on ``threads``."""
    if not available():
        raise WrkMissing("wrk is not installed (Debian: apt-get install wrk)")
    lua = work_dir / f"wrk-{port}.lua"
    lua.write_text(script(path, headers))
    done = subprocess.run(
        [
            WRK,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(lua),
            f"http://{HOST}:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    return parse(done.stdout)
