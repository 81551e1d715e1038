"""Webhook deliveries: rows of the outbox (:mod:`~controlplane.services.effects`) written
by the intake's own fast insert, between GitHub and the control worker.

A verified delivery is committed first, sent by the relay second; processing is
idempotent and keyed by the delivery row, so a lost message is re-driven and a duplicate
is harmless.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, DateTime, Dialect, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from controlplane import metrics
from controlplane.db import Database, execute_on_driver
from controlplane.errors import NotFound, PermanentError, TransientError
from controlplane.github import manifest
from controlplane.github.webhooks import Delivery
from controlplane.models import Build, WebhookDelivery, utcnow
from controlplane.services import checks, commands, effects, installations, previews, pushes
from controlplane.services.outcomes import Effects, HandlerContext, Outcome
from controlplane.statuses import DeliveryStatus

log = logging.getLogger(__name__)

# What the App subscribes to (its manifest says so), and the installation events GitHub
# sends every App.
HANDLED_EVENTS = frozenset({*manifest.EVENTS, "installation", "installation_repositories"})
DONE = ("processed", "ignored")


Handler = Callable[[Session, WebhookDelivery, HandlerContext], Outcome]


@dataclass(frozen=True, slots=True)
class Recorded:
    delivery_id: int
    status: str
    # "new": first time seen; "retry": a failed one redelivered; "duplicate": already had.
    kind: Literal["new", "retry", "duplicate"]


class DeliveryNotVisible(TransientError):
    """The row is not visible (yet): a message for a delivery never committed."""


# The channel committed deliveries are announced on (PostgreSQL NOTIFY, after the commit):
# the relay's one channel.
CHANNEL = effects.CHANNEL

_INSERT_COLUMNS = (
    "guid",
    "event",
    "action",
    "hook_id",
    "installation_id",
    "repository_id",
    "repository_full_name",
    "payload",
    "status",
    "outcome",
    "attempts",
    "received_at",
    "processed_at",
)


@functools.cache
def _insert_sql(dialect: Dialect) -> tuple[str, Callable[[Any], Any] | None]:
    """The intake statement as driver SQL, made once per dialect, and its timestamp binder
    (building and compiling a SQLAlchemy statement per request cost more than the insert).
    """
    if dialect.paramstyle == "pyformat":
        marks = {column: f"%({column})s" for column in _INSERT_COLUMNS}
    else:
        marks = {column: f":{column}" for column in _INSERT_COLUMNS}
    table = WebhookDelivery.__tablename__
    columns = ", ".join(_INSERT_COLUMNS)
    values = ", ".join(marks[column] for column in _INSERT_COLUMNS)
    # Only constants go into the text; every value is a driver parameter.
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES ({values}) "  # noqa: S608
        "ON CONFLICT (guid) DO NOTHING RETURNING id"
    )
    return sql, DateTime(timezone=True).bind_processor(dialect)


def intake(database: Database, delivery: Delivery, raw_body: bytes) -> Recorded:
    """Commit a verified delivery to the outbox: the hot path GitHub waits on.

    One autocommitted statement (one round trip, no Redis): the row is ``received``, and
    once it is committed the relays in the control workers are woken (a NOTIFY sent by
    another thread); they send it to the control queue (see :mod:`tasks.relay`). A
    redelivery of the same GUID inserts nothing. A connection found dead (the database
    restarted) is retried once, which is safe: the insert is keyed by the GUID.
    """
    try:
        return _intake(database, delivery, raw_body)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return _intake(database, delivery, raw_body)


def _intake(database: Database, delivery: Delivery, raw_body: bytes) -> Recorded:
    handled = delivery.event in HANDLED_EVENTS
    engine = database.intake_engine
    sql, bind_timestamp = _insert_sql(engine.dialect)
    now = bind_timestamp(utcnow()) if bind_timestamp else utcnow()
    parameters = {
        "guid": delivery.guid,
        "event": delivery.event,
        "action": delivery.action,
        "hook_id": delivery.hook_id,
        "installation_id": delivery.installation_id,
        "repository_id": delivery.repository_id,
        "repository_full_name": delivery.repository_full_name,
        "payload": raw_body.decode("utf-8"),
        "status": "received" if handled else "ignored",
        "outcome": None if handled else f"event {delivery.event!r} is not handled by Portside",
        "attempts": 0,
        "received_at": now,
        "processed_at": None if handled else now,
    }
    inserted = execute_on_driver(engine, sql, parameters)
    if inserted is None:
        with engine.connect() as connection:
            known = _known(connection, delivery.guid)
        kind = "duplicate" if known.kind == "duplicate" else "received"
        metrics.count_delivery(delivery.event, kind)
        return known
    if handled:
        database.notify_soon(CHANNEL)
    metrics.count_delivery(delivery.event, "received")
    return Recorded(int(inserted[0]), "received" if handled else "ignored", "new")


def _known(connection: Connection, guid: str) -> Recorded:
    """A GUID seen before: run a failed delivery again, leave any other alone."""
    existing = connection.execute(
        select(WebhookDelivery.id, WebhookDelivery.status).where(WebhookDelivery.guid == guid)
    ).one_or_none()
    if existing is None:  # deleted between the insert and the select
        raise PermanentError(f"delivery {guid} vanished while being recorded")
    if existing.status != DeliveryStatus.FAILED:
        return Recorded(existing.id, existing.status, "duplicate")
    claimed = connection.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == existing.id, WebhookDelivery.status == DeliveryStatus.FAILED)
        .values(status=DeliveryStatus.RECEIVED, outcome=None, enqueued_at=None, processed_at=None)
    )
    if claimed.rowcount != 1:  # a concurrent redelivery claimed it first
        return Recorded(existing.id, "received", "duplicate")
    wake_relays(connection)
    return Recorded(existing.id, "received", "retry")


def wake_relays(connection: Connection | Session) -> None:
    """Tell the relays new rows are ``received`` (at the commit; they also poll)."""
    bind = connection if isinstance(connection, Connection) else connection.get_bind()
    if bind.dialect.name == "postgresql":
        connection.execute(select(func.pg_notify(CHANNEL, "")))


def claim_received(session: Session, limit: int) -> list[int]:
    """Lock up to ``limit`` received deliveries, oldest first, for one relay to send.

    Rows another relay holds are skipped, so relays in several control workers share
    the work without sending a row twice.
    """
    return list(
        session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status == DeliveryStatus.RECEIVED)
            .order_by(WebhookDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def mark_sent(session: Session, delivery_ids: list[int]) -> None:
    """Note that the relay queued these (part of the relay's transaction)."""
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id.in_(delivery_ids), WebhookDelivery.status == DeliveryStatus.RECEIVED
        )
        .values(status=DeliveryStatus.ENQUEUED, enqueued_at=utcnow())
    )


def requeue_lost(
    session: Session, enqueued_grace: dt.timedelta, now: dt.datetime | None = None
) -> int:
    """Put back in the outbox the deliveries sent and still unprocessed after
    ``enqueued_grace`` (their message was lost: Redis restarted, a worker died holding
    it); the relay sends them again. Return how many."""
    now = now or utcnow()
    requeued = session.scalars(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.status == DeliveryStatus.ENQUEUED,
            WebhookDelivery.enqueued_at < now - enqueued_grace,
        )
        .values(status=DeliveryStatus.RECEIVED, enqueued_at=None)
        .returning(WebhookDelivery.id)
    ).all()
    if requeued:
        wake_relays(session)
    return len(requeued)


def redeliver(session: Session, delivery_id: int) -> WebhookDelivery:
    """Put a delivery back in the outbox (an operator's request); the caller commits."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    delivery.status = DeliveryStatus.RECEIVED
    delivery.outcome = None
    delivery.enqueued_at = None
    delivery.processed_at = None
    wake_relays(session)
    return delivery


HANDLERS: dict[str, Handler] = {
    "installation": installations.handle_installation_event,
    "installation_repositories": installations.handle_repositories_event,
    "push": pushes.handle_push,
    "pull_request": previews.handle_pull_request,
    "check_run": checks.handle_check_run,
    "check_suite": checks.handle_check_event,
    "status": checks.handle_check_event,
    "issue_comment": commands.handle_comment,
    "commit_comment": commands.handle_comment,
}


def process(session: Session, delivery_id: int, context: HandlerContext) -> Effects:
    """Apply a delivery's effects once; return the work left for after the commit.

    The row is locked for the transaction, so concurrent runs of the same delivery
    serialize and the second one finds it done. Transient errors propagate (the task
    retries); permanent ones mark the delivery failed.
    """
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise DeliveryNotVisible(f"delivery {delivery_id} is not (yet) committed")
    if delivery.status in DONE:
        return Effects()
    delivery.attempts += 1
    handler = HANDLERS.get(delivery.event)
    try:
        outcome = (
            handler(session, delivery, context)
            if handler
            else Outcome("ignored", f"event {delivery.event!r} is not handled by Portside")
        )
    except PermanentError as exc:
        session.rollback()
        mark_failed(session, delivery_id, str(exc))
        return Effects()
    delivery.status = outcome.status
    delivery.outcome = outcome.reason
    delivery.processed_at = utcnow()
    started = Effects(builds=_builds_started_by(session, delivery.id))
    session.commit()
    return started


def _builds_started_by(session: Session, delivery_id: int) -> list[int]:
    """The builds a delivery started (its processing runs once: a failed run's are gone)."""
    return list(session.scalars(select(Build.id).where(Build.delivery_id == delivery_id)))


def mark_failed(session: Session, delivery_id: int, reason: str) -> None:
    """Record a failed run (its own transaction: the run's changes were rolled back)."""
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status.not_in(DONE))
        .values(
            status=DeliveryStatus.FAILED,
            outcome=reason[:2000],
            processed_at=utcnow(),
            attempts=WebhookDelivery.attempts + 1,
        )
    )
    session.commit()
