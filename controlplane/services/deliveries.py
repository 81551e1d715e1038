"""Webhook deliveries: the durable outbox between GitHub and the control worker.

A verified delivery is committed first, enqueued second; processing is idempotent and
keyed by the delivery row, so a lost enqueue is re-driven and a duplicate is harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.errors import NotFound, PermanentError
from controlplane.github.app import GitHubApp
from controlplane.github.webhooks import Delivery
from controlplane.models import WebhookDelivery, utcnow
from controlplane.services import installations, pushes
from controlplane.services.outcomes import Outcome

log = logging.getLogger(__name__)

HANDLED_EVENTS = frozenset({"installation", "installation_repositories", "push", "pull_request"})
DONE = ("processed", "ignored")
# A delivery that nobody enqueued for this long is re-driven by the outbox.
RECEIVED_GRACE = dt.timedelta(seconds=10)
# An enqueued delivery still unprocessed after this long lost its message (Redis restart).
ENQUEUED_GRACE = dt.timedelta(minutes=2)


Handler = Callable[[Session, WebhookDelivery, GitHubApp | None], Outcome]


@dataclass(frozen=True, slots=True)
class Recorded:
    delivery: WebhookDelivery
    # "new": first time seen; "retry": a failed one redelivered; "duplicate": already had.
    kind: Literal["new", "retry", "duplicate"]


def record(session: Session, delivery: Delivery) -> Recorded:
    """Commit a delivery (the outbox row) unless its GUID is known; say which case it was."""
    handled = delivery.event in HANDLED_EVENTS
    row = WebhookDelivery(
        guid=delivery.guid,
        event=delivery.event,
        action=delivery.action,
        hook_id=delivery.hook_id,
        installation_id=delivery.installation_id,
        repository_id=delivery.repository_id,
        repository_full_name=delivery.repository_full_name,
        payload=delivery.payload,
        status="received" if handled else "ignored",
        outcome=None if handled else f"event {delivery.event!r} is not handled by Portside",
        processed_at=None if handled else utcnow(),
    )
    session.add(row)
    try:
        session.commit()
        return Recorded(row, "new")
    except IntegrityError:
        session.rollback()
    existing = session.scalar(select(WebhookDelivery).where(WebhookDelivery.guid == delivery.guid))
    if existing is None:  # deleted between the insert and the select
        raise PermanentError(f"delivery {delivery.guid} vanished while being recorded")
    if existing.status == "failed":
        claimed = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == existing.id, WebhookDelivery.status == "failed")
            .values(status="received", outcome=None, enqueued_at=None)
        )
        session.commit()
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(existing)
            return Recorded(existing, "retry")
    return Recorded(existing, "duplicate")


def mark_enqueued(session: Session, delivery_id: int) -> None:
    """Note the enqueue, unless a worker was faster and already moved the row on."""
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "received")
        .values(status="enqueued", enqueued_at=utcnow())
    )
    session.commit()


def due_for_redrive(session: Session, now: dt.datetime | None = None) -> list[int]:
    """Deliveries committed but never enqueued, or enqueued and then lost."""
    now = now or utcnow()
    rows = session.scalars(
        select(WebhookDelivery.id)
        .where(
            or_(
                (WebhookDelivery.status == "received")
                & (WebhookDelivery.received_at < now - RECEIVED_GRACE),
                WebhookDelivery.status.in_(("enqueued", "processing"))
                & (WebhookDelivery.enqueued_at < now - ENQUEUED_GRACE),
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


def _handle_pull_request(
    session: Session, delivery: WebhookDelivery, github: GitHubApp | None
) -> Outcome:
    number = delivery.payload.get("number")
    return Outcome(
        "processed",
        f"pull request #{number} {delivery.action} recorded for the preview lifecycle",
    )


HANDLERS: dict[str, Handler] = {
    "installation": installations.handle_installation_event,
    "installation_repositories": installations.handle_repositories_event,
    "push": pushes.handle_push,
    "pull_request": _handle_pull_request,
}


def process(session: Session, delivery_id: int, github: GitHubApp | None) -> list[int]:
    """Apply a delivery's effects once; return the ids of builds it started.

    The row is locked for the transaction, so concurrent runs of the same delivery
    serialize and the second one finds it done. Transient errors propagate (the task
    retries); permanent ones mark the delivery failed.
    """
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    if delivery.status in DONE:
        return []
    delivery.attempts += 1
    handler = HANDLERS.get(delivery.event)
    try:
        outcome = (
            handler(session, delivery, github)
            if handler
            else Outcome("ignored", f"event {delivery.event!r} is not handled by Portside")
        )
    except PermanentError as exc:
        session.rollback()
        mark_failed(session, delivery_id, str(exc))
        return []
    delivery.status = outcome.status
    delivery.outcome = outcome.reason
    delivery.processed_at = utcnow()
    started = pushes.builds_started_by(session, delivery.id)
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
