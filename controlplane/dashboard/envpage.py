"""An environment's own page: what runs (memory, CPU and restarts as its agent last
reported them, the containers) and a live log pane following the same server-sent event
stream as ``GET /v1/environments/{id}/logs`` (with this session: read only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Response, abort, render_template, request, url_for

from controlplane.api.envlogs import follow
from controlplane.dashboard.views import (
    _redis,
    _reported_containers,
    _settings,
    blueprint,
)
from controlplane.db import session
from controlplane.models import Environment
from controlplane.services import desired, envlogs, logstream
from controlplane.services.feedback import environment_url

# Lines the page opens with; the pane then follows new ones.
PAGE_LOG_LINES = 200
MEBIBYTE = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    """An environment's running containers summed, as its agent last reported them."""

    memory: str
    cpu: str
    restarts: int


def _number(value: Any) -> float | None:
    """A JSON number of the agent's report (bool is not one), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def memory_text(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1024 * MEBIBYTE:
        return f"{value / (1024 * MEBIBYTE):.2f} GiB"
    return f"{value / MEBIBYTE:.1f} MiB"


def cpu_text(cores: float | None) -> str:
    """Cores in use over the agent's last sampling interval (``—`` after one sample)."""
    return "—" if cores is None else f"{cores:.2f} cores ({cores * 100:.0f}% of one)"


def reported_usage(observed: Any, name: str) -> Usage | None:
    """The ``usage`` the agent reported for environment ``name`` (its JSON: read
    defensively), None without one."""
    reported = observed.get("environments") if isinstance(observed, dict) else None
    for item in reported if isinstance(reported, list) else []:
        if not isinstance(item, dict) or item.get("name") != name:
            continue
        usage = item.get("usage")
        if not isinstance(usage, dict):
            return None
        restarts = _number(usage.get("restarts"))
        return Usage(
            memory=memory_text(_number(usage.get("memory_bytes"))),
            cpu=cpu_text(_number(usage.get("cpu_cores"))),
            restarts=int(restarts or 0),
        )
    return None


def _environment_or_404(environment_id: int) -> Environment:
    environment = session().get(Environment, environment_id)
    if environment is None:
        abort(404, f"There is no environment {environment_id}.")
    return environment


@blueprint.get("/environments/<int:environment_id>")
def environment_page(environment_id: int) -> str:
    environment = _environment_or_404(environment_id)
    host = environment.host
    lines = envlogs.read(_redis(), environment.id, tail=PAGE_LOG_LINES)
    # Follow on from the last line shown (from the start of the stream if none was).
    after = lines[-1]["id"] if lines else logstream.START
    return render_template(
        "environment.html",
        environment=environment,
        url=environment_url(environment),
        online=desired.is_online(host, _settings().agent_interval),
        usage=reported_usage(host.observed, environment.name),
        containers=_reported_containers(host.observed).get(environment.name, []),
        lines=lines,
        page_lines=PAGE_LOG_LINES,
        stream_url=url_for(
            "dashboard.environment_log_stream", environment_id=environment.id, after=after
        ),
    )


@blueprint.get("/environments/<int:environment_id>/logs/stream")
def environment_log_stream(environment_id: int) -> Response:
    """The API's stream of the environment's lines for this session (EventSource sends no
    bearer header), resuming after ``Last-Event-ID`` or ``?after=``."""
    _environment_or_404(environment_id)
    after = request.headers.get("Last-Event-ID") or request.args.get("after")
    return follow(environment_id, after, request.args.get("service"))
