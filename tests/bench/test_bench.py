"""The benchmarks' own arithmetic, and a tiny real run of the two that need the whole stack.

No figure is asserted: the numbers depend on the machine. The runs prove the benchmarks
still work end to end (their checks pass, their table is printed).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import agents, cli, wrkload
from bench.buildqueue import QueuedBuild, fairness, ideal_queue, in_flight, jain, percentile
from bench.common import Figure, broken, render_figures

ROOT = Path(__file__).resolve().parents[2]


def queued(service: str, created: float, clone: float, end: float, work: float) -> QueuedBuild:
    return QueuedBuild(service, created, clone, end, work, "w1", "succeeded")


def test_the_table_has_one_row_per_figure_and_aligned_columns() -> None:
    lines = render_figures(
        [
            Figure("intake ratio", "0.40", ">= 0.35", True),
            Figure("p99", "61.0 ms", "< 50 ms", False),
            Figure("latency", "1 s", "none", None),
            broken("storm", "1000/1000"),
        ]
    )
    assert lines[0].split(" | ") == ["figure      ", "measured            ", "target   ", "met?"]
    assert [line.rsplit("| ", 1)[1] for line in lines[2:]] == ["yes", "NO", "-", "NO"]
    assert len({line.index("|") for line in lines if "|" in line}) == 1


def test_jain_is_one_for_equal_shares_and_one_over_n_for_a_monopoly() -> None:
    assert jain([5, 5, 5, 5]) == 1.0
    assert jain([20, 0, 0, 0]) == 0.25
    assert math.isnan(jain([0, 0]))


def test_an_ideal_queue_starts_the_oldest_build_when_a_worker_frees() -> None:
    builds = [
        queued("a", 0.0, 0, 0, 10.0),
        queued("a", 0.0, 0, 0, 10.0),
        queued("b", 1.0, 0, 0, 5.0),
    ]
    # Two workers: the first two start at once, the third waits for the first to end.
    assert ideal_queue(builds, 2) == [(0.0, 10.0), (0.0, 10.0), (9.0, 14.0)]


def test_builds_in_flight_counts_overlaps_on_one_worker() -> None:
    assert in_flight([queued("a", 0, 0, 5, 5), queued("a", 0, 5, 9, 4)]) == 1
    assert in_flight([queued("a", 0, 0, 5, 5), queued("a", 0, 1, 9, 4)]) == 2


def test_fairness_of_a_backlog_drained_one_service_after_the_other() -> None:
    builds = [queued("a", 0, 0, end, 1) for end in (1, 2)]
    builds += [queued("b", 0, 0, end, 1) for end in (3, 4)]
    index, positions = fairness(builds)
    assert index == 0.5  # the first half of the completions were all a's
    assert positions == {"a": 1.5, "b": 3.5}
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0


def test_cli_start_up_figures_are_ratios_to_the_baseline_held_to_the_issue_s_targets() -> None:
    help_name, api_name = (command.name for command in cli.COMMANDS)
    found = cli.figures(0.02, {help_name: 0.06, api_name: 0.55})
    assert [(f.name, f.measured, f.target, f.met) for f in found[1:]] == [
        (help_name, "0.060 s = 3.0 x baseline", "< 0.3 s", True),
        (api_name, "0.550 s = 27.5 x baseline", "< 0.5 s", False),
    ]
    assert found[0].met is None


def test_the_cli_start_up_bench_runs_the_real_command() -> None:
    result = run_bench("cli", "--runs", "1")
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for command in cli.COMMANDS:
        assert re.search(
            rf"{re.escape(command.name)} +\| [0-9.]+ s = .* \| (yes|NO)$",
            result.stdout,
            re.MULTILINE,
        ), result.stdout


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PORTSIDE_BENCH_REDIS_DB": os.environ.get("PORTSIDE_BENCH_REDIS_DB", "10")}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )


@pytest.mark.slow
def test_a_small_storm_runs_and_every_push_is_processed_once() -> None:
    result = run_bench("storm", "--deliveries", "20", "--warmup", "5", "--drain-timeout", "120")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(
        r"processed exactly once, one build each +\| 20/20 +\| 20/20 +\| yes", result.stdout
    )


@pytest.mark.slow
@pytest.mark.docker
def test_a_small_build_queue_drains() -> None:
    result = run_bench("queue", "--services", "2", "--per-service", "2", "--timeout", "240")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"builds succeeded .*\| 4/4 in \d+ s +\| 4/4 +\| yes", result.stdout)


WRK_REPORT = """Running 10s test @ http://127.0.0.1:8000/v1/agent/desired-state
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.20ms  40.00ms   90.00%
    Req/Sec     1.90k   100.00     2.10k    70.00%
  Latency Distribution
     50%  812.00us
     75%    2.00ms
     90%    3.00ms
     99%    1.20s
  38000 requests in 10.00s, 4.00MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   3800.50
Transfer/sec:    400.00KB
"""


def test_a_wrk_report_is_read_with_its_units_and_errors() -> None:
    found = wrkload.parse(WRK_REPORT)
    assert found == wrkload.WrkResult(38000, 3800.5, 0.812, 1200.0, 3, 3)
    with pytest.raises(ValueError):
        wrkload.parse("wrk: connection refused")


def test_the_wrk_script_sends_each_header_set_in_turn_quoted() -> None:
    text = wrkload.script("/p", [{"Authorization": "Bearer a"}, {"If-None-Match": '"7"'}])
    assert 'wrk.format(\'GET\', "/p", {["Authorization"] = "Bearer a"})' in text
    assert '["If-None-Match"] = "\\"7\\""' in text
    assert "turn % #requests + 1" in text


def test_agents_wrk_figures_are_ratios_to_bare_sync_at_each_size() -> None:
    args = agents.parse_args(["--small", "10", "--large", "100"])

    def run(rate: float, p99: float, unexpected: int = 0) -> dict[str, float | int]:
        return wrkload.WrkResult(1, rate, 1.0, p99, unexpected, 0).summary()

    result = {
        "wrk": {
            "10": {"bare_sync": [run(1000, 5)], "portside": [run(900, 6)]},
            "100": {"bare_sync": [run(1000, 5)], "portside": [run(900, 6, unexpected=1)]},
        }
    }
    small, large = agents.wrk_figures(result, args)
    assert (small.measured.split()[0], small.target, small.met) == ("0.900", ">= 0.85", True)
    assert large.met is False  # an answer other than 304 fails it whatever the rate
    assert [figure.met for figure in agents.wrk_figures({}, args)] == [False, False]


def test_a_deployment_to_the_fleet_meets_its_target_only_when_every_agent_saw_it() -> None:
    def marks(seen: int, p50: float, last: float) -> dict[str, float | int]:
        return {"agents": 1000, "seen": seen, "p50_ms": p50, "p99_ms": last, "max_ms": last}

    fleet = {
        "outcomes": {"304": 10},
        "cpu_ms_per_agent_minute": {"gunicorn": 7.0},
        "held_max": 1990,
        "threads_available": 2100,
        "ten_hosts": marks(10, 100, 200) | {"agents": 10},
        "fleet_hosts": marks(1000, 1400, 2900),
        "rss_kb_per_agent": 100.0,
        "rss_mb": 400.0,
    }
    assert all(figure.met for figure in agents.fleet_figures(fleet, 2000))
    for late in (marks(999, 1400, 2900), marks(1000, 1600, 2900), marks(1000, 1400, 3100)):
        figures = agents.fleet_figures({**fleet, "fleet_hosts": late}, 2000)
        assert [f.met for f in figures if "1000 hosts" in f.name] == [False]
