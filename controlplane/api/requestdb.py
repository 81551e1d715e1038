"""The database as Flask sees it: one session per request, closed at teardown.

Kept apart from :mod:`controlplane.db` so services and workers, which only take a
``Session``, never import Flask.
"""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from controlplane.db import Database


def init_app(app: Flask, database: Database) -> None:
    """Make ``database`` the app's (``app.extensions["portside.db"]``)."""
    app.extensions["portside.db"] = database
    app.teardown_appcontext(_close_request_session)


def session() -> Session:
    """The current request's session, opened on first use."""
    if "db_session" not in g:
        database: Database = current_app.extensions["portside.db"]
        g.db_session = database.new_session()
    current: Session = g.db_session
    return current


def _close_request_session(_exc: BaseException | None) -> None:
    current = g.pop("db_session", None)
    if current is not None:
        current.close()
