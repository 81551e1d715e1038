"""Fixtures shared by every test: a fresh PostgreSQL database, Redis, the app, tokens."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from controlplane import migrate
from controlplane.app import create_app
from controlplane.composition import open_database
from controlplane.db import Database
from controlplane.models import Base
from controlplane.services import tokens
from controlplane.settings import Secret, Settings
from tests.helpers import WEBHOOK_SECRET

pytest_plugins = [
    "tests.fixtures.docker",
    "tests.fixtures.github",
    "tests.fixtures.processes",
    "tests.fixtures.stack",
]

# Concurrent test runs on one machine each need an index of their own (the benches use
# 10, or PORTSIDE_BENCH_REDIS_DB).
TEST_REDIS_DB = int(os.environ.get("PORTSIDE_TEST_REDIS_DB", "13"))


def _admin_url() -> str:
    return os.environ.get(
        "PORTSIDE_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
    )


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A PostgreSQL database of this test session's own, migrated, dropped at the end."""
    admin = create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"portside_test_{os.getpid()}_{secrets.token_hex(3)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(_admin_url()).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_base_url() -> str:
    return os.environ.get("PORTSIDE_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")


@pytest.fixture
def redis_url(redis_base_url: str) -> Iterator[str]:
    """A Redis database index of the tests' own, flushed before and after each test."""
    url = f"{redis_base_url}/{TEST_REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        github_webhook_secret=Secret(WEBHOOK_SECRET),
        secret_key=Secret("portside-test-secret-key-0123456789"),
        data_dir=tmp_path / "data",
    )


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    """The test database, emptied after each test so tests never see each other's rows."""
    database, _redis = open_database(settings)
    yield database
    tables = ", ".join(f'"{table.name}"' for table in reversed(Base.metadata.sorted_tables))
    with database.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    database.dispose()


@pytest.fixture
def db_session(database: Database) -> Iterator[Session]:
    session = database.new_session()
    yield session
    session.close()


@pytest.fixture
def app(settings: Settings, database: Database) -> Iterator[Flask]:
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["portside.wake_hub"].close()
    app.extensions["portside.db"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _token(database: Database, scope: str) -> str:
    """A token of ``scope``; a worker's claims every build, a fork's too."""
    builds = "all" if scope == "worker" else None
    with database.session_scope() as session:
        _token_row, secret = tokens.create_token(session, f"test-{scope}", scope, builds=builds)
    return secret


@pytest.fixture
def admin_headers(database: Database) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(database, 'admin')}"}


@pytest.fixture
def read_headers(database: Database) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(database, 'read')}"}


@pytest.fixture
def worker_headers(database: Database) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(database, 'worker')}"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
