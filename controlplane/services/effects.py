"""Work that must wait until a transaction commits: GitHub feedback, registry cleanup and
notifications to the targets a service configured.

Services note these in ``session.info``; the dispatcher installed on each process's
database sends them as control tasks after the commit (best effort: GitHub feedback is
never allowed to block or undo a deploy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

FEEDBACK = "portside.feedback"
DOOMED_IMAGES = "portside.doomed_images"
NOTIFICATIONS = "portside.notifications"


def note_feedback(session: Session, event: str, object_id: int) -> None:
    session.info.setdefault(FEEDBACK, []).append((event, object_id))


def note_doomed_images(session: Session, images: list[dict[str, Any]]) -> None:
    if images:
        session.info.setdefault(DOOMED_IMAGES, []).extend(images)


def note_notification(session: Session, event: str, object_id: int) -> None:
    """A deploy event for the service's notification targets (see services.notifications)."""
    session.info.setdefault(NOTIFICATIONS, []).append((event, object_id))


def dispatcher(
    send_feedback: Callable[[str, int], None],
    delete_images: Callable[[list[dict[str, Any]]], None],
    notify: Callable[[str, int], None] | None = None,
) -> Callable[[Session], None]:
    def dispatch_committed(session: Session) -> None:
        events = session.info.pop(FEEDBACK, [])
        images = session.info.pop(DOOMED_IMAGES, [])
        notifications = session.info.pop(NOTIFICATIONS, [])
        if notify is not None:
            for event, object_id in notifications:
                try:
                    notify(event, object_id)
                except Exception as exc:  # never blocks or undoes a deploy
                    log.warning("could not send notification %s %s: %s", event, object_id, exc)
        try:
            for event, object_id in events:
                send_feedback(event, object_id)
            if images:
                delete_images(images)
        except Exception as exc:  # the broker is down; the deploy itself is unaffected
            log.warning("could not send %d follow-up tasks: %s", len(events) + 1, exc)

    return dispatch_committed
