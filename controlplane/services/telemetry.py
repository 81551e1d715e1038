"""Metrics read from the state of record when ``/metrics`` is scraped.

What the Celery workers and the agents do is recorded in PostgreSQL, so it is counted
from there rather than scraped from each worker: deliveries by outcome, builds and
deployments by status, build step durations and queue waits (histograms computed in one
aggregate query each), each service's deployments by status and its build and deploy
durations (labelled by service, at most MAX_SERVICE_LABELS of them), agents' last-seen age
and what they report of their containers.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from typing import Any, cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session, aliased

from controlplane.models import (
    Build,
    BuildStep,
    Deployment,
    Environment,
    Host,
    Service,
    WebhookDelivery,
    utcnow,
)
from controlplane.statuses import BUILD_STATUSES, DEPLOYMENT_STATUSES, BuildStatus, StepStatus

STEP_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
BUILD_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0)
DEPLOY_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Series per service stay bounded: past this many services (oldest first) the rest are
# counted together under OTHER_SERVICE.
MAX_SERVICE_LABELS = 200
OTHER_SERVICE = "_other"
# Deliveries whose count comes from their recorded state (see controlplane.metrics).
RECORDED_OUTCOMES = ("ignored", "processed", "failed")


def _seconds(session: Session, later: Any, earlier: Any) -> ColumnElement[float]:
    if session.get_bind().dialect.name == "postgresql":
        return cast(ColumnElement[float], func.extract("epoch", later - earlier))
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _bucket_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _histogram(
    session: Session,
    *,
    name: str,
    documentation: str,
    rows_query: Any,
    seconds: ColumnElement[float],
    label: Any,
    buckets: Sequence[float],
    label_name: str = "step",
) -> Metric:
    """A histogram family with one series per ``label``, counted in the database."""
    columns = [
        label,
        func.count(),
        func.coalesce(func.sum(seconds), 0.0),
        *(func.sum(case((seconds <= bound, 1), else_=0)) for bound in buckets),
    ]
    family = HistogramMetricFamily(name, documentation, labels=[label_name])
    for row in session.execute(rows_query.with_only_columns(*columns).group_by(label)):
        step, count, total, *cumulative = row
        pairs = [
            (_bucket_label(bound), float(cumulated or 0))
            for bound, cumulated in zip(buckets, cumulative, strict=True)
        ]
        pairs.append(("+Inf", float(count)))
        family.add_metric([str(step)], pairs, float(total or 0.0))
    return family


def _deliveries(session: Session) -> Metric:
    family = CounterMetricFamily(
        "portside_deliveries",
        "GitHub deliveries by event and outcome.",
        labels=["event", "outcome"],
    )
    rows = session.execute(
        select(WebhookDelivery.event, WebhookDelivery.status, func.count())
        .where(WebhookDelivery.status.in_(RECORDED_OUTCOMES))
        .group_by(WebhookDelivery.event, WebhookDelivery.status)
    )
    for event, status, count in rows:
        family.add_metric([event, status], float(count))
    return family


def _by_status(
    session: Session, model: Any, statuses: Sequence[str], name: str, what: str
) -> Metric:
    rows = session.execute(select(model.status, func.count()).group_by(model.status))
    counts: dict[str, int] = {status: count for status, count in rows}
    family = GaugeMetricFamily(name, f"{what} by their current status.", labels=["status"])
    for status in sorted({*statuses, *counts}):
        family.add_metric([status], float(counts.get(status, 0)))
    return family


def _registry_pruned(session: Session) -> Metric:
    """Production builds whose images the registry retention deleted (services.retention)."""
    count = session.scalar(
        select(func.count()).select_from(Build).where(Build.images_deleted_at.is_not(None))
    )
    family = CounterMetricFamily(
        "portside_registry_pruned_builds",
        "Production builds whose images the registry retention deleted.",
    )
    family.add_metric([], float(count or 0))
    return family


def _step_durations(session: Session) -> Metric:
    seconds = _seconds(session, BuildStep.finished_at, BuildStep.started_at)
    query = select(BuildStep.name).where(
        BuildStep.status.in_((StepStatus.SUCCEEDED, StepStatus.FAILED)),
        BuildStep.started_at.is_not(None),
        BuildStep.finished_at.is_not(None),
    )
    return _histogram(
        session,
        name="portside_build_step_duration_seconds",
        documentation="How long finished build steps ran, by step.",
        rows_query=query,
        seconds=seconds,
        label=BuildStep.name,
        buckets=STEP_BUCKETS,
    )


def _queue_waits(session: Session) -> Metric:
    """From the moment a step could start (the build was queued, or the step before it
    finished) to the moment a build worker claimed it."""
    previous = aliased(BuildStep)
    ready = func.coalesce(previous.finished_at, Build.created_at)
    seconds = _seconds(session, BuildStep.started_at, ready)
    query = (
        select(BuildStep.name)
        .join(Build, Build.id == BuildStep.build_id)
        .outerjoin(
            previous,
            and_(
                previous.build_id == BuildStep.build_id,
                previous.position == BuildStep.position - 1,
            ),
        )
        .where(BuildStep.started_at.is_not(None))
    )
    return _histogram(
        session,
        name="portside_build_queue_wait_seconds",
        documentation="Time from a build step being ready to run to a worker starting it.",
        rows_query=query,
        seconds=seconds,
        label=BuildStep.name,
        buckets=WAIT_BUCKETS,
    )


def _service_label(session: Session) -> ColumnElement[str]:
    """The ``service`` label of a row joined to its service: its name, or OTHER_SERVICE
    past the first MAX_SERVICE_LABELS live services (and for deleted ones)."""
    named = session.scalars(
        select(Service.name)
        .where(Service.deleted_at.is_(None))
        .order_by(Service.id)
        .limit(MAX_SERVICE_LABELS)
    ).all()
    return case((Service.name.in_(named), Service.name), else_=OTHER_SERVICE)


def _service_deployments(session: Session, service: ColumnElement[str]) -> Metric:
    rows = session.execute(
        select(service, Deployment.status, func.count())
        .select_from(Deployment)
        .join(Environment, Environment.id == Deployment.environment_id)
        .join(Service, Service.id == Environment.service_id)
        .group_by(service, Deployment.status)
    )
    family = GaugeMetricFamily(
        "portside_service_deployments",
        "Deployments of each service by their current status.",
        labels=["service", "status"],
    )
    for name, status, count in rows:
        family.add_metric([str(name), str(status)], float(count))
    return family


def _build_durations(session: Session, service: ColumnElement[str]) -> Metric:
    query = (
        select(service)
        .select_from(Build)
        .join(Service, Service.id == Build.service_id)
        .where(
            Build.status.in_((BuildStatus.SUCCEEDED, BuildStatus.FAILED)),
            Build.started_at.is_not(None),
            Build.finished_at.is_not(None),
        )
    )
    return _histogram(
        session,
        name="portside_build_duration_seconds",
        documentation="How long finished builds ran (first step started to last finished), "
        "by service.",
        rows_query=query,
        seconds=_seconds(session, Build.finished_at, Build.started_at),
        label=service,
        buckets=BUILD_BUCKETS,
        label_name="service",
    )


def _deploy_durations(session: Session, service: ColumnElement[str]) -> Metric:
    query = (
        select(service)
        .select_from(Deployment)
        .join(Environment, Environment.id == Deployment.environment_id)
        .join(Service, Service.id == Environment.service_id)
        .where(Deployment.activated_at.is_not(None))
    )
    return _histogram(
        session,
        name="portside_deploy_duration_seconds",
        documentation="From a deployment being recorded to its agent reporting it healthy "
        "and switched, by service.",
        rows_query=query,
        seconds=_seconds(session, Deployment.activated_at, Deployment.created_at),
        label=service,
        buckets=DEPLOY_BUCKETS,
        label_name="service",
    )


def _hosts(session: Session, now: dt.datetime) -> Iterator[Metric]:
    age = GaugeMetricFamily(
        "portside_agent_last_seen_age_seconds",
        "Seconds since each host's agent last reported (absent: never reported).",
        labels=["host"],
    )
    restarts = GaugeMetricFamily(
        "portside_container_restarts",
        "Restart count of each container, as its host's agent last reported it.",
        labels=["host", "environment", "container"],
    )
    health = GaugeMetricFamily(
        "portside_container_health",
        "1 for each container's health as last reported (healthy, unhealthy, starting, none).",
        labels=["host", "environment", "container", "health"],
    )
    for host in session.scalars(select(Host).order_by(Host.name)):
        if host.last_seen_at is not None:
            age.add_metric([host.name], max(0.0, (now - host.last_seen_at).total_seconds()))
        report = host.observed if isinstance(host.observed, dict) else {}
        for environment in report.get("environments") or []:
            if not isinstance(environment, dict):
                continue
            env_name = str(environment.get("name") or "")
            for container in environment.get("containers") or []:
                if not isinstance(container, dict):
                    continue
                labels = [host.name, env_name, str(container.get("name") or container.get("id"))]
                count = container.get("restart_count")
                if isinstance(count, int):
                    restarts.add_metric(labels, float(count))
                health.add_metric([*labels, str(container.get("health") or "none")], 1.0)
    yield from (age, restarts, health)


def families(session: Session, now: dt.datetime | None = None) -> list[Metric]:
    """Every metric family counted from the database, as of now."""
    service = _service_label(session)
    return [
        _service_deployments(session, service),
        _build_durations(session, service),
        _deploy_durations(session, service),
        _deliveries(session),
        _by_status(session, Build, BUILD_STATUSES, "portside_builds", "Builds"),
        _by_status(session, Deployment, DEPLOYMENT_STATUSES, "portside_deployments", "Deployments"),
        _registry_pruned(session),
        _step_durations(session),
        _queue_waits(session),
        *_hosts(session, now or utcnow()),
    ]
