"""The outbox: what the control plane sends once a transaction commits (GitHub feedback,
notifications, registry cleanup, a new build's supersede check, a look at the checks a
held build waits for) is a row written in that
transaction, so it is sent if and only if the change that caused it is committed.

The relay in each control worker (:mod:`tasks.relay`) is woken at the commit (a NOTIFY,
delivered by PostgreSQL with the commit and dropped on rollback; SQLite polls), sends
each row as a control task and deletes it in one transaction. A broker that is down
leaves the rows waiting; a relay that dies between sending and committing sends them
again, which the tasks tolerate (each reads the current state of the object it names).
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from controlplane.models import OutboxMessage

# The one channel the relay listens on: deliveries received, outbox rows written,
# builds queued or started.
CHANNEL = "portside_outbox"


class Kind(enum.StrEnum):
    """What an outbox row asks for (the relay maps each to its control task)."""

    FEEDBACK = "feedback"
    NOTIFICATION = "notification"
    DELETE_IMAGES = "delete_images"
    SUPERSEDE = "supersede"
    CHECK_GATES = "check_gates"


def wake_relay(session: Session) -> None:
    """Have the relays look again once this transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))


def write(session: Session, kind: Kind, *args: Any) -> None:
    """Add a row to the outbox in the caller's transaction."""
    session.add(OutboxMessage(kind=kind.value, args=list(args)))
    wake_relay(session)


def note_feedback(session: Session, event: str, object_id: int) -> None:
    """Tell GitHub about a build or deployment (commit status, deployment, PR comment)."""
    write(session, Kind.FEEDBACK, event, object_id)


def note_doomed_images(session: Session, images: list[dict[str, Any]]) -> None:
    """Delete torn-down images from the registry (repository, digest, environment only)."""
    if images:
        refs = [
            {key: image[key] for key in ("repository", "digest", "environment_id")}
            for image in images
        ]
        write(session, Kind.DELETE_IMAGES, refs)


def note_notification(session: Session, event: str, object_id: int) -> None:
    """A deploy event for the service's notification targets (see services.notifications)."""
    write(session, Kind.NOTIFICATION, event, object_id)


def note_supersede(session: Session, build_id: int) -> None:
    """Cancel what a new build makes pointless, asking GitHub where the push payloads
    cannot tell (off the transaction that queued it: that never waits on GitHub)."""
    write(session, Kind.SUPERSEDE, build_id)


def claim(session: Session, limit: int) -> list[OutboxMessage]:
    """Lock up to ``limit`` rows, oldest first; rows another relay holds are skipped."""
    return list(
        session.scalars(
            select(OutboxMessage)
            .order_by(OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def remove(session: Session, messages: list[OutboxMessage]) -> None:
    """Delete sent rows (part of the relay's transaction)."""
    session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_([m.id for m in messages])))


def pending(session: Session, kind: Kind | None = None) -> list[OutboxMessage]:
    """Rows not sent yet (oldest first), of one kind or all."""
    query = select(OutboxMessage).order_by(OutboxMessage.id)
    if kind is not None:
        query = query.where(OutboxMessage.kind == kind.value)
    return list(session.scalars(query))
