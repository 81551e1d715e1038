"""Webhook deliveries: the durable outbox between GitHub and the control worker.

A verified delivery is committed first, enqueued second; processing is idempotent and
keyed by the delivery row, so a lost enqueue is re-driven and a duplicate is harmless.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, DateTime, Dialect, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from controlplane import metrics
from controlplane.db import Database
from controlplane.errors import NotFound, PermanentError, TransientError
from controlplane.github.webhooks import Delivery
from controlplane.models import WebhookDelivery, utcnow
from controlplane.services import installations, previews, pushes
from controlplane.services.outcomes import Effects, HandlerContext, Outcome

log = logging.getLogger(__name__)

HANDLED_EVENTS = frozenset({"installation", "installation_repositories", "push", "pull_request"})
DONE = ("processed", "ignored")
# A delivery that nobody enqueued for this long is re-driven by the outbox.
RECEIVED_GRACE = dt.timedelta(seconds=10)


Handler = Callable[[Session, WebhookDelivery, HandlerContext], Outcome]


@dataclass(frozen=True, slots=True)
class Recorded:
    delivery_id: int
    status: str
    # "new": first time seen; "retry": a failed one redelivered; "duplicate": already had.
    kind: Literal["new", "retry", "duplicate"]


class DeliveryNotVisible(TransientError):
    """The row is not visible (yet): a message for a delivery never committed."""


@functools.cache
def _insert_sql(dialect: Dialect) -> tuple[str, Callable[[Any], Any] | None]:
    """The intake INSERT as driver SQL, made once per dialect, and its timestamp binder.

    Building and compiling a SQLAlchemy statement cost more than the insert itself on
    the hot path GitHub waits on; the SQL text never changes.
    """
    if dialect.paramstyle == "pyformat":
        marks = {column: f"%({column})s" for column in _INSERT_COLUMNS}
    else:
        marks = {column: f":{column}" for column in _INSERT_COLUMNS}
    if dialect.name == "postgresql":
        # The raw body goes in as it came: no second JSON encoding of a large payload.
        marks["payload"] = f"CAST({marks['payload']} AS JSONB)"
    # Only constants go into the text; every value is a driver parameter.
    table = WebhookDelivery.__tablename__
    sql = (
        f"INSERT INTO {table} ({', '.join(_INSERT_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join(marks[column] for column in _INSERT_COLUMNS)}) "
        "ON CONFLICT (guid) DO NOTHING RETURNING id"
    )
    return sql, DateTime(timezone=True).bind_processor(dialect)


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
    "enqueued_at",
    "processed_at",
)


def intake(
    database: Database, delivery: Delivery, raw_body: bytes, enqueue: Callable[[int], None]
) -> Recorded:
    """Commit a verified delivery, then enqueue its processing: the hot path GitHub waits on.

    One autocommitted ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` (one round trip)
    records the row as ``enqueued``; then ``enqueue`` announces it. If the broker is down
    the row is set back to ``received`` and the outbox re-drives it; if this process dies
    between the two, the outbox re-drives the ``enqueued`` row after ``PORTSIDE_REDRIVE_AFTER``.
    A connection found dead (the database restarted) is retried once, which is safe:
    the insert is keyed by the delivery GUID.
    """
    try:
        return _intake(database, delivery, raw_body, enqueue)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return _intake(database, delivery, raw_body, enqueue)


def _intake(
    database: Database, delivery: Delivery, raw_body: bytes, enqueue: Callable[[int], None]
) -> Recorded:
    handled = delivery.event in HANDLED_EVENTS
    with database.intake_engine.connect() as connection:
        sql, bind_timestamp = _insert_sql(connection.dialect)
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
            "status": "enqueued" if handled else "ignored",
            "outcome": None if handled else f"event {delivery.event!r} is not handled by Portside",
            "attempts": 0,
            "received_at": now,
            "enqueued_at": now if handled else None,
            "processed_at": None if handled else now,
        }
        delivery_id = connection.exec_driver_sql(sql, parameters).scalar()
        if delivery_id is None:
            known = _known(connection, delivery.guid, enqueue)
            kind = "duplicate" if known.kind == "duplicate" else "received"
            metrics.count_delivery(delivery.event, kind)
            return known
        status = _announce(connection, delivery_id, enqueue) if handled else "ignored"
    metrics.count_delivery(delivery.event, "received")
    return Recorded(delivery_id, status, "new")


def _announce(connection: Connection, delivery_id: int, enqueue: Callable[[int], None]) -> str:
    """Enqueue a committed delivery; with the broker down, leave it to the outbox."""
    try:
        enqueue(delivery_id)
    except Exception as exc:
        log.warning("delivery %s committed but not enqueued: %s", delivery_id, exc)
        connection.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "enqueued")
            .values(status="received", enqueued_at=None)
        )
        return "received"
    return "enqueued"


def _known(connection: Connection, guid: str, enqueue: Callable[[int], None]) -> Recorded:
    """A GUID seen before: run a failed delivery again, leave any other alone."""
    existing = connection.execute(
        select(WebhookDelivery.id, WebhookDelivery.status).where(WebhookDelivery.guid == guid)
    ).one_or_none()
    if existing is None:  # deleted between the insert and the select
        raise PermanentError(f"delivery {guid} vanished while being recorded")
    if existing.status != "failed":
        return Recorded(existing.id, existing.status, "duplicate")
    claimed = connection.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == existing.id, WebhookDelivery.status == "failed")
        .values(status="enqueued", outcome=None, enqueued_at=utcnow())
    )
    if claimed.rowcount != 1:  # a concurrent redelivery claimed it first
        return Recorded(existing.id, "enqueued", "duplicate")
    return Recorded(existing.id, _announce(connection, existing.id, enqueue), "retry")


def mark_enqueued(session: Session, delivery_id: int) -> None:
    """Note the enqueue, unless a worker was faster and already moved the row on."""
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "received")
        .values(status="enqueued", enqueued_at=utcnow())
    )
    session.commit()


def due_for_redrive(
    session: Session, enqueued_grace: dt.timedelta, now: dt.datetime | None = None
) -> list[int]:
    """Deliveries committed but never enqueued, or enqueued and still unprocessed after
    ``enqueued_grace`` (their message or id was lost: Redis restarted, a process died)."""
    now = now or utcnow()
    rows = session.scalars(
        select(WebhookDelivery.id)
        .where(
            or_(
                (WebhookDelivery.status == "received")
                & (WebhookDelivery.received_at < now - RECEIVED_GRACE),
                WebhookDelivery.status.in_(("enqueued", "processing"))
                & (WebhookDelivery.enqueued_at < now - enqueued_grace),
            )
        )
        .order_by(WebhookDelivery.id)
        .limit(1000)
    )
    return list(rows)


def redeliver(session: Session, delivery_id: int) -> WebhookDelivery:
    """Reset a delivery so it is processed again (an operator's explicit request)."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    delivery.status = "received"
    delivery.outcome = None
    delivery.enqueued_at = None
    delivery.processed_at = None
    session.commit()
    return delivery


HANDLERS: dict[str, Handler] = {
    "installation": installations.handle_installation_event,
    "installation_repositories": installations.handle_repositories_event,
    "push": pushes.handle_push,
    "pull_request": previews.handle_pull_request,
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
    started = Effects(builds=pushes.builds_started_by(session, delivery.id))
    session.commit()
    return started


def mark_failed(session: Session, delivery_id: int, reason: str) -> None:
    """Record a failed run (its own transaction: the run's changes were rolled back)."""
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status.not_in(DONE))
        .values(
            status="failed",
            outcome=reason[:2000],
            processed_at=utcnow(),
            attempts=WebhookDelivery.attempts + 1,
        )
    )
    session.commit()
