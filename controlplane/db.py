"""The database handle: an engine and a session factory per process.

Services take a ``Session`` argument and never reach for a global; Flask views get theirs
from :func:`session` (one per request, closed at teardown), Celery tasks from
:meth:`Database.session_scope`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from controlplane.errors import ConfigError
from controlplane.settings import Settings


def make_engine(settings: Settings, *, autocommit: bool = False) -> Engine:
    """Create an engine; SQLite gets a busy timeout and foreign keys turned on.

    ``autocommit`` makes the small pool of the webhook intake: every statement commits
    on its own (one round trip, no BEGIN/COMMIT) and no pre-ping (another round trip per
    checkout); a dead connection raises once and the caller retries.
    """
    options: dict[str, Any] = {"pool_pre_ping": not autocommit}
    if autocommit:
        # Nothing to roll back when a connection goes back to the pool.
        options.update(isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
    if settings.is_sqlite:
        path = settings.database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"PORTSIDE_DATABASE_URL points to a directory that cannot be created: {exc}"
                ) from None
        options["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        # 4 web workers x (15 + 8 for the intake) stay under PostgreSQL's default of 100.
        options.update(pool_size=5, max_overflow=10, pool_recycle=1800, pool_timeout=10)
        if autocommit:
            # A fixed pool: an overflow connection would be opened and closed per burst.
            options.update(pool_size=8, max_overflow=0)
        options["connect_args"] = {"connect_timeout": 5}
    engine = create_engine(settings.database_url, **options)
    if settings.is_sqlite:

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

    return engine


class Database:
    """Engine + session factory; connects lazily, on the first query."""

    def __init__(self, settings: Settings) -> None:
        self.engine: Engine = make_engine(settings)
        self._sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._settings = settings

    @functools.cached_property
    def intake_engine(self) -> Engine:
        """The webhook receiver's autocommit pool, made on first use (web processes only)."""
        return make_engine(self._settings, autocommit=True)

    def after_commit(self, callback: Callable[[Session], None]) -> None:
        """Run ``callback(session)`` after every commit (for effects outside the database,
        such as waking agents); ``session.info`` is cleared of it on rollback."""
        event.listen(self._sessionmaker, "after_commit", callback)
        event.listen(self._sessionmaker, "after_rollback", _forget_pending_effects)

    def init_app(self, app: Flask) -> None:
        app.extensions["portside.db"] = self
        app.teardown_appcontext(_close_request_session)

    def new_session(self) -> Session:
        return self._sessionmaker()

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        session = self.new_session()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        if "intake_engine" in self.__dict__:
            self.intake_engine.dispose()


def session() -> Session:
    """The current request's session, opened on first use."""
    if "db_session" not in g:
        database: Database = current_app.extensions["portside.db"]
        g.db_session = database.new_session()
    current: Session = g.db_session
    return current


def _forget_pending_effects(session: Session) -> None:
    session.info.clear()


def _close_request_session(_exc: BaseException | None) -> None:
    current = g.pop("db_session", None)
    if current is not None:
        current.close()
