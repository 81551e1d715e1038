"""Where an environment runs: its own host, and for every kind but previews the service's
further hosts too (``service_hosts``), each with the service's ``replicas``.

A service on one host (no further hosts) behaves exactly as before. An environment on
several hosts is one deployment everywhere: every host's snapshot carries it, and it is
``running`` (its deployment ``active``) only once the agent of each of its hosts reported
the deployment running with all its replicas healthy; a failure on any host fails the
deployment and takes every host back to the previous one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from controlplane.errors import ValidationFailed
from controlplane.models import Environment, Host, Service, ServiceHost
from controlplane.services import hosts as hosts_service

MAX_REPLICAS = 20
MAX_HOSTS = 32
# Kinds that stay on one host (their own), whatever the service's hosts.
SINGLE_HOST_KINDS = ("preview",)


def spreads(environment: Environment) -> bool:
    """Whether ``environment`` runs on all its service's hosts (previews run on one)."""
    return environment.kind not in SINGLE_HOST_KINDS


def host_ids(environment: Environment) -> list[int]:
    """Every host ``environment`` runs on, its own first."""
    ids = [environment.host_id]
    if spreads(environment):
        ids += [row.host_id for row in environment.service.extra_hosts if row.host_id not in ids]
    return ids


def placed_on(host_id: int) -> ColumnElement[bool]:
    """The environments a host runs: its own, and the spread ones of services it serves."""
    return or_(
        Environment.host_id == host_id,
        and_(
            Environment.kind.not_in(SINGLE_HOST_KINDS),
            Environment.service_id.in_(
                select(ServiceHost.service_id).where(ServiceHost.host_id == host_id)
            ),
        ),
    )


def replicas_for(environment: Environment) -> int:
    """Containers of ``environment`` on each of its hosts: previews run one."""
    return environment.service.replicas if spreads(environment) else 1


def resolve_hosts(session: Session, names: Sequence[str]) -> list[Host]:
    """The hosts named, in order; ValidationFailed naming what is wrong with the list."""
    cleaned = [str(name).strip().lower() for name in names]
    if not cleaned:
        raise ValidationFailed("no hosts", details={"hosts": ["at least one host"]})
    if len(cleaned) > MAX_HOSTS:
        raise ValidationFailed("too many hosts", details={"hosts": [f"at most {MAX_HOSTS}"]})
    if len(set(cleaned)) != len(cleaned):
        raise ValidationFailed("a host twice", details={"hosts": ["each host once"]})
    found = {h.name: h for h in session.scalars(select(Host).where(Host.name.in_(cleaned)))}
    unknown = [name for name in cleaned if name not in found]
    if unknown:
        raise ValidationFailed(
            "unknown host", details={"hosts": [f"no host named {name}" for name in unknown]}
        )
    chosen = [found[name] for name in cleaned]
    for host in chosen:
        hosts_service.refuse_production_on(host)
    return chosen


def check_replicas(replicas: Any) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ValidationFailed("bad replicas", details={"replicas": ["an integer"]})
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValidationFailed(
            "bad replicas", details={"replicas": [f"between 1 and {MAX_REPLICAS}"]}
        )
    return replicas


def spread_environments(session: Session, service: Service) -> list[Environment]:
    return list(
        session.scalars(
            select(Environment).where(
                Environment.service_id == service.id,
                Environment.kind.not_in(SINGLE_HOST_KINDS),
            )
        )
    )


def set_hosts(session: Session, service: Service, chosen: Sequence[Host]) -> set[int]:
    """Run the service's spread environments on ``chosen`` (the first is its own host);
    returns every host whose desired state changes (those it leaves and those it joins)."""
    environments = spread_environments(session, service)
    before = {host_id for env in environments for host_id in host_ids(env)}
    service.host_id = chosen[0].id
    service.extra_hosts = [
        ServiceHost(host_id=host.id, position=index) for index, host in enumerate(chosen[1:], 1)
    ]
    wanted = {host.id for host in chosen}
    for environment in environments:
        if environment.host_id not in wanted:
            environment.host_id = chosen[0].id
    session.flush()
    after = {host_id for env in environments for host_id in host_ids(env)}
    return before ^ after


def reports_running(host: Host | None, name: str, deployment_id: int) -> bool:
    """Whether ``host``'s agent last reported ``deployment_id`` of ``name`` running, every
    replica healthy (its report, kept as ``hosts.observed``)."""
    report = (host.observed if host is not None else None) or {}
    return any(
        isinstance(item, dict)
        and item.get("name") == name
        and item.get("deployment_id") == deployment_id
        and item.get("state") == "running"
        and item.get("healthy") is True
        for item in report.get("environments") or []
    )


def reported_address(session: Session, environment: Environment, deployment_id: int) -> str | None:
    """Where the environment's own host last reported the deployment answering, if it did."""
    report = getattr(session.get(Host, environment.host_id), "observed", None) or {}
    address = next(
        (
            item.get("address")
            for item in report.get("environments") or []
            if isinstance(item, dict)
            and item.get("name") == environment.name
            and item.get("deployment_id") == deployment_id
        ),
        None,
    )
    return address if isinstance(address, str) else None


def running_everywhere(
    session: Session, environment: Environment, deployment_id: int, reporting: Host
) -> bool:
    """Whether the deployment, which ``reporting``'s agent reports running, runs healthy
    on every other host of the environment too, by each agent's own last report."""
    return all(
        reports_running(session.get(Host, host_id), environment.name, deployment_id)
        for host_id in host_ids(environment)
        if host_id != reporting.id
    )
