"""An environment's own page: what runs (memory, CPU and restarts as its agents last
reported them, on each of its hosts and together, and the containers) and a live log
pane following the same server-sent event stream as ``GET /v1/environments/{id}/logs``
(with this session: read only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Response, abort, render_template, request, url_for
from sqlalchemy import select

from controlplane.api.envlogs import follow
from controlplane.api.requestdb import session
from controlplane.dashboard.hostspage import ContainerRow, reported_containers
from controlplane.dashboard.views import _redis, _settings, blueprint
from controlplane.models import Environment, Host
from controlplane.services import envlogs, hosts, logstream, placements
from controlplane.services.githubwrites import environment_url

# Lines the page opens with; the pane then follows new ones.
PAGE_LOG_LINES = 200
MEBIBYTE = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    """An environment's running containers summed, as an agent last reported them (or
    summed over its hosts)."""

    memory_bytes: float | None
    cpu_cores: float | None
    restarts: int

    @property
    def memory(self) -> str:
        return memory_text(self.memory_bytes)

    @property
    def cpu(self) -> str:
        return cpu_text(self.cpu_cores)


@dataclass(frozen=True)
class HostRuntime:
    """One host the environment runs on and what its agent last reported of it."""

    host: Host
    online: bool
    usage: Usage | None
    containers: list[ContainerRow]


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
            memory_bytes=_number(usage.get("memory_bytes")),
            cpu_cores=_number(usage.get("cpu_cores")),
            restarts=int(restarts or 0),
        )
    return None


def _sum(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def total_usage(usages: list[Usage]) -> Usage | None:
    """What the environment uses on all its hosts together (None if none reported)."""
    if not usages:
        return None
    return Usage(
        memory_bytes=_sum([u.memory_bytes for u in usages]),
        cpu_cores=_sum([u.cpu_cores for u in usages]),
        restarts=sum(u.restarts for u in usages),
    )


def runtime(environment: Environment, interval: int) -> list[HostRuntime]:
    """Each host the environment runs on (its own first), as their agents reported it."""
    ids = placements.host_ids(environment)
    found = {host.id: host for host in session().scalars(select(Host).where(Host.id.in_(ids)))}
    return [
        HostRuntime(
            host=host,
            online=hosts.is_online(host, interval),
            usage=reported_usage(host.observed, environment.name),
            containers=reported_containers(host.observed).get(environment.name, []),
        )
        for host in (found[host_id] for host_id in ids if host_id in found)
    ]


def _environment_or_404(environment_id: int) -> Environment:
    environment = session().get(Environment, environment_id)
    if environment is None:
        abort(404, f"There is no environment {environment_id}.")
    return environment


@blueprint.get("/environments/<int:environment_id>")
def environment_page(environment_id: int) -> str:
    environment = _environment_or_404(environment_id)
    hosts = runtime(environment, _settings().agent_interval)
    lines = envlogs.read(_redis(), environment.id, tail=PAGE_LOG_LINES)
    # Follow on from the last line shown (from the start of the stream if none was).
    after = lines[-1]["id"] if lines else logstream.START
    return render_template(
        "environment.html",
        environment=environment,
        url=environment_url(environment),
        hosts=hosts,
        usage=total_usage([h.usage for h in hosts if h.usage is not None]),
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
