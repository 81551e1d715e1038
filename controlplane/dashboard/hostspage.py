"""The dashboard's hosts page: each host, whether its agent reported lately, what it runs
and the containers it last reported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import render_template

from controlplane.api.requestdb import session
from controlplane.dashboard.views import EnvironmentRow, _settings, blueprint
from controlplane.models import Host
from controlplane.services import hosts, listings
from controlplane.services.githubwrites import environment_url


@dataclass
class ContainerRow:
    name: str
    image: str
    status: str
    health: str
    restarts: str


@dataclass
class HostRow:
    host: Host
    online: bool
    environments: list[EnvironmentRow]
    containers: dict[str, list[ContainerRow]]


def _text(value: Any) -> str:
    return "" if value is None else str(value)[:200]


def reported_containers(observed: Any) -> dict[str, list[ContainerRow]]:
    """The containers an agent last reported, by environment (the report is the agent's
    JSON: read defensively)."""
    result: dict[str, list[ContainerRow]] = {}
    reported = observed.get("environments") if isinstance(observed, dict) else None
    for item in reported if isinstance(reported, list) else []:
        if not isinstance(item, dict):
            continue
        containers = item.get("containers")
        result[_text(item.get("name"))] = [
            ContainerRow(
                name=_text(c.get("name")),
                image=_text(c.get("image")),
                status=_text(c.get("status")),
                health=_text(c.get("health")),
                restarts=_text(c.get("restart_count")),
            )
            for c in (containers if isinstance(containers, list) else [])
            if isinstance(c, dict)
        ]
    return result


@blueprint.get("/hosts")
def hosts_page() -> str:
    db = session()
    rows = [
        HostRow(
            host=item.host,
            online=item.online,
            environments=[
                EnvironmentRow(env, environment_url(env), env.current_deployment, None)
                for env in item.environments
            ],
            containers=reported_containers(item.host.observed),
        )
        for item in listings.overview(db, hosts.list_hosts(db), _settings().agent_interval)
    ]
    return render_template("hosts.html", rows=rows)
