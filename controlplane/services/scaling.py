"""Scaling a service: its ``replicas`` and its ``hosts`` (``POST``/``PATCH
/v1/services``), kept apart from the fields :mod:`controlplane.services.servicerules` checks.

Every host whose share changes (joined, left, or a new replica count) gets a new
generation in the same transaction; the others are not woken.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from controlplane.errors import ValidationFailed
from controlplane.models import Service
from controlplane.services import audit, generations, placements
from controlplane.services.catalog import get_service

FIELDS = ("hosts", "replicas")


def split(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A service body without its scaling fields, and those fields. At creation ``host``
    may be left out when ``hosts`` names it first."""
    rest = {key: value for key, value in data.items() if key not in FIELDS}
    scaling = {key: data[key] for key in FIELDS if data.get(key) is not None}
    return rest, scaling


def primary_host(data: dict[str, Any], scaling: dict[str, Any]) -> str:
    """The host a new service is created on: ``host``, else the first of ``hosts``, else
    "" (:func:`~controlplane.services.catalog.create_service` takes the only host)."""
    listed = [str(name).strip().lower() for name in scaling.get("hosts") or []]
    host = str(data.get("host") or "").strip().lower()
    if host and listed and listed[0] != host:
        raise ValidationFailed(
            "host is not the first of hosts", details={"hosts": [f"must start with {host}"]}
        )
    return host or (listed[0] if listed else "")


def scale(
    session: Session,
    service_id: int,
    actor: str,
    *,
    hosts: list[str] | None = None,
    replicas: int | None = None,
) -> Service:
    """Run the service's production environments on ``hosts`` (the first is its own
    host) with ``replicas`` containers on each; None leaves a field as it is."""
    service = get_service(session, service_id)
    changed: set[int] = set()
    before = {"hosts": [h.name for h in hosts_of(service)], "replicas": service.replicas}
    if hosts is not None:
        changed |= placements.set_hosts(session, service, placements.resolve_hosts(session, hosts))
    if replicas is not None and placements.check_replicas(replicas) != service.replicas:
        service.replicas = replicas
        for environment in placements.spread_environments(session, service):
            changed.update(placements.host_ids(environment))
    session.flush()
    session.refresh(service, ["host", "extra_hosts"])
    for host_id in sorted(changed):
        generations.bump(session, host_id)
    after = {"hosts": [h.name for h in hosts_of(service)], "replicas": service.replicas}
    if after != before:
        audit.record(session, actor, "service.scale", "service", service.id, old=before, new=after)
    return service


def hosts_of(service: Service) -> list[Any]:
    """The service's hosts, its own first (what ``hosts`` shows)."""
    return [service.host, *(row.host for row in service.extra_hosts)]
