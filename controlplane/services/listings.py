"""The read side the API and the dashboard share: what each listing selects, in which
order, and one page of it. Writes stay in the resource's own service module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from controlplane.errors import NotFound
from controlplane.models import (
    AuditEvent,
    Build,
    Deployment,
    Environment,
    Host,
    Service,
    WebhookDelivery,
)
from controlplane.services import placements
from controlplane.services.hosts import is_online
from controlplane.statuses import EnvironmentStatus

Row = TypeVar("Row")


@dataclass
class Page:
    """One page of a listing and the number of rows in the whole listing."""

    items: list[Any]
    total: int


def read_page(session: Session, statement: Select[Any], page: int, page_size: int) -> Page:
    """Page ``page`` (from 1) of ``page_size`` rows of ``statement``, and its row count."""
    total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    rows = session.scalars(statement.offset((page - 1) * page_size).limit(page_size))
    return Page(list(rows), total)


def _get(session: Session, model: type[Row], row_id: int, noun: str) -> Row:
    row = session.get(model, row_id)
    if row is None:
        raise NotFound(f"{noun} {row_id} does not exist")
    return row


def get_build(session: Session, build_id: int) -> Build:
    return _get(session, Build, build_id, "build")


def get_delivery(session: Session, delivery_id: int) -> WebhookDelivery:
    return _get(session, WebhookDelivery, delivery_id, "delivery")


def get_environment(session: Session, environment_id: int) -> Environment:
    return _get(session, Environment, environment_id, "environment")


def builds(
    *, service_id: int | None = None, environment_id: int | None = None, status: str | None = None
) -> Select[Build]:
    """Builds, newest first, with their service and environment loaded for listing."""
    statement = (
        select(Build)
        .order_by(Build.id.desc())
        .options(selectinload(Build.service), selectinload(Build.environment))
    )
    if service_id is not None:
        statement = statement.where(Build.service_id == service_id)
    if environment_id is not None:
        statement = statement.where(Build.environment_id == environment_id)
    if status is not None:
        statement = statement.where(Build.status == status)
    return statement


def deliveries(*, event: str | None = None, status: str | None = None) -> Select[WebhookDelivery]:
    """Webhook deliveries, newest first."""
    statement = select(WebhookDelivery).order_by(WebhookDelivery.id.desc())
    if event is not None:
        statement = statement.where(WebhookDelivery.event == event)
    if status is not None:
        statement = statement.where(WebhookDelivery.status == status)
    return statement


def builds_started_by(session: Session, delivery_ids: list[int]) -> dict[int, list[Build]]:
    """The builds each of these deliveries started, oldest first."""
    started: dict[int, list[Build]] = {}
    if delivery_ids:
        statement = select(Build).where(Build.delivery_id.in_(delivery_ids)).order_by(Build.id)
        for build in session.scalars(statement):
            started.setdefault(build.delivery_id or 0, []).append(build)
    return started


def environments(*, service_id: int | None = None, kind: str | None = None) -> Select[Environment]:
    """Environments by name."""
    statement = select(Environment).order_by(Environment.name)
    if service_id is not None:
        statement = statement.where(Environment.service_id == service_id)
    if kind is not None:
        statement = statement.where(Environment.kind == kind)
    return statement


def audit_events(
    *, action: str | None = None, target_type: str | None = None
) -> Select[AuditEvent]:
    """Audit events, newest first."""
    statement = select(AuditEvent).order_by(AuditEvent.id.desc())
    if action is not None:
        statement = statement.where(AuditEvent.action == action)
    if target_type is not None:
        statement = statement.where(AuditEvent.target_type == target_type)
    return statement


def latest_deployment_of(session: Session, build_id: int) -> Deployment | None:
    """The newest deployment a build made, if any."""
    return session.scalar(
        select(Deployment).where(Deployment.build_id == build_id).order_by(Deployment.id.desc())
    )


@dataclass
class HostOverview:
    """A host, whether its agent reported lately, and the environments it runs."""

    host: Host
    online: bool
    environments: list[Environment]


def hosts() -> Select[Host]:
    """Hosts by name."""
    return select(Host).order_by(Host.name)


def overview(session: Session, listed: list[Host], agent_interval: int) -> list[HostOverview]:
    """What each listed host runs (environments not torn down, by name)."""
    result = []
    for host in listed:
        running = session.scalars(
            select(Environment)
            .where(placements.placed_on(host.id), Environment.status != EnvironmentStatus.INACTIVE)
            .order_by(Environment.name)
            .options(selectinload(Environment.current_deployment).selectinload(Deployment.build))
        )
        result.append(HostOverview(host, is_online(host, agent_interval), list(running)))
    return result


def live_services(session: Session) -> list[Service]:
    """Services not deleted, by name, with their environments, what each runs and their
    host loaded (the services page reads them all)."""
    return list(
        session.scalars(
            select(Service)
            .where(Service.deleted_at.is_(None))
            .order_by(Service.name)
            .options(
                selectinload(Service.environments)
                .selectinload(Environment.current_deployment)
                .selectinload(Deployment.build),
                selectinload(Service.host),
            )
        )
    )


def latest_builds(session: Session, environment_ids: list[int]) -> dict[int, Build]:
    """The newest build of each of these environments, by environment id."""
    if not environment_ids:
        return {}
    newest = (
        select(func.max(Build.id))
        .where(Build.environment_id.in_(environment_ids))
        .group_by(Build.environment_id)
    )
    rows = session.scalars(select(Build).where(Build.id.in_(newest)))
    return {build.environment_id: build for build in rows}
