"""The audit trail: one row per change, written in the same transaction as the change."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from controlplane.models import AuditEvent


def record(
    session: Session,
    actor: str,
    action: str,
    target_type: str,
    target_id: object = None,
    **detail: Any,
) -> AuditEvent:
    event = AuditEvent(
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        detail=detail,
    )
    session.add(event)
    return event
