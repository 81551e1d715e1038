"""What every form post of the dashboard checks: the session's CSRF token and an admin's
session; and how a service's refusal becomes the page's error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from flask import abort, g, request
from sqlalchemy.orm import Session

from controlplane.api.errors import http_status
from controlplane.dashboard import login
from controlplane.errors import DomainError
from controlplane.statuses import TokenScope


def admin_form(what: str) -> str:
    """The acting admin (as the audit log names it), or abort: 400 for a stale or forged
    form, 403 for a read-only session."""
    if not login.csrf_ok(request.form.get("csrf")):
        abort(400, "the form is out of date; reload the page")
    token = g.dashboard_token
    if token.scope != TokenScope.ADMIN:
        abort(403, f"{what} needs an admin token")
    return f"token:{token.name}"


@contextlib.contextmanager
def committed(db: Session) -> Iterator[None]:
    """Commit what the block did; a refusal rolls it back and is the page's answer."""
    try:
        yield
    except DomainError as exc:
        db.rollback()
        abort(http_status(exc), exc.message)
    db.commit()
