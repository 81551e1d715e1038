"""The database handle: an engine and a session factory per process.

Services take a ``Session`` argument and never reach for a global; Flask views get theirs
from :func:`controlplane.api.requestdb.session` (one per request, closed at teardown),
Celery tasks from :meth:`Database.session_scope`. Plain SQLAlchemy: no Flask here.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from controlplane.errors import ConfigError
from controlplane.settings import Settings

log = logging.getLogger(__name__)


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
            _sqlite_directory(Path(path).parent, settings.data_dir)
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


def _sqlite_directory(directory: Path, data_dir: Path) -> None:
    """Portside's own data directory is made on first use; any other directory must exist,
    so a mistyped path is one line, not a tree of directories made where nobody looks."""
    if directory.is_dir():
        return
    if directory != data_dir:
        raise ConfigError(
            f"PORTSIDE_DATABASE_URL names a file in {directory}, which does not exist"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"PORTSIDE_DATA_DIR {directory} cannot be created: {exc.strerror}"
        ) from None


def execute_on_driver(
    engine: Engine, sql: str, parameters: Sequence[Any] | Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """Run one statement (driver SQL) on a pooled DB-API connection; its first row, if any.

    For the webhook path, where SQLAlchemy's Connection, execution context and result
    cost more CPU than the insert itself. Driver errors are raised as SQLAlchemy's, and a
    lost connection is invalidated, as a Connection would.
    """
    dbapi = engine.dialect.loaded_dbapi
    try:
        connection = engine.raw_connection()
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi.Error) from exc
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(sql, parameters)
            row = cursor.fetchone() if cursor.description else None
        finally:
            cursor.close()
    except dbapi.Error as exc:
        lost = engine.dialect.is_disconnect(exc, connection.dbapi_connection, None)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, connection_invalidated=lost) from exc
    finally:
        connection.close()
    return None if row is None else tuple(row)


class Notifier:
    """Sends PostgreSQL notifications from a thread of its own, after the caller's commit.

    A NOTIFY in the committing transaction holds PostgreSQL's notification lock through
    that commit's WAL flush, so concurrent committers go one at a time (half the insert
    rate of 8 webhook senders, and a convoy when the CPUs are busy). Here a caller only
    records the channel; the thread sends every channel recorded meanwhile in one short
    transaction that does not wait for its flush: a notification lost to a crash costs
    the listeners one poll, never data.
    """

    RETRY_DELAY = 1.0
    # After a send, channels recorded within this many seconds wait for the next one:
    # under a storm one notification covers many commits (each costs the database a
    # transaction); a commit after a quiet spell is announced at once.
    MIN_INTERVAL = 0.02

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._changed = threading.Condition()
        self._pending: set[str] = set()
        self._closed = False
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_pid = 0

    def notify(self, channel: str) -> None:
        """Wake ``channel``'s listeners soon (call it after the commit they must see)."""
        with self._changed:
            self._pending.add(channel)
            thread = self._thread
            # Threads do not survive a fork: a gunicorn worker starts its own.
            if thread is None or self._thread_pid != os.getpid() or not thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
                self._thread_pid = os.getpid()
                self._thread.start()
            self._changed.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._changed:
            self._closed = True
            self._closing.set()
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and self._thread_pid == os.getpid():
            thread.join(timeout)

    def _run(self) -> None:
        failing = False
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                channels, self._pending = self._pending, set()
            try:
                self._send(sorted(channels))
            except Exception as exc:  # the database is down: listeners poll meanwhile
                if not failing:  # once per outage, not once per retry
                    log.warning("could not notify %s: %s", ", ".join(channels), exc)
                failing = True
                with self._changed:
                    self._pending |= channels
                self._closing.wait(self.RETRY_DELAY)
            else:
                failing = False
                self._closing.wait(self.MIN_INTERVAL)

    def _send(self, channels: list[str]) -> None:
        notifies = ", ".join("pg_notify(%s, '')" for _ in channels)
        # One autocommitted statement: its own transaction, committed asynchronously.
        sql = f"SELECT set_config('synchronous_commit', 'off', true), {notifies}"
        execute_on_driver(self._engine, sql, channels)


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

    @functools.cached_property
    def _notifier(self) -> Notifier:
        return Notifier(self.intake_engine)

    def notify_soon(self, channel: str) -> None:
        """Wake ``channel``'s listeners after a commit, without delaying the caller
        (PostgreSQL; elsewhere the listeners poll)."""
        if self.engine.dialect.name == "postgresql":
            self._notifier.notify(channel)

    def after_commit(self, callback: Callable[[Session], None]) -> None:
        """Run ``callback(session)`` after every commit (for effects outside the database,
        such as waking agents); ``session.info`` is cleared of it on rollback."""
        event.listen(self._sessionmaker, "after_commit", callback)
        event.listen(self._sessionmaker, "after_rollback", _forget_pending_effects)

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
        notifier = self.__dict__.pop("_notifier", None)
        if notifier is not None:
            notifier.close()
        self.engine.dispose()
        if "intake_engine" in self.__dict__:
            self.intake_engine.dispose()


def _forget_pending_effects(session: Session) -> None:
    session.info.clear()
