"""Alembic migrations: head is exactly the models' schema, and base is empty again.

Each test gets a database of its own (never the session's shared one), dropped at the end.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    CheckConstraint,
    Engine,
    ForeignKeyConstraint,
    Table,
    create_engine,
    inspect,
    text,
)
from sqlalchemy.engine import make_url

from controlplane import migrate
from controlplane.models import Base

MODEL_TABLES = set(Base.metadata.tables)


def _admin_url() -> str:
    return os.environ.get(
        "PORTSIDE_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
    )


@contextmanager
def scratch_postgres() -> Iterator[Engine]:
    """An empty PostgreSQL database of its own, dropped on leaving."""
    admin = create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"portside_migrations_{os.getpid()}_{secrets.token_hex(3)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(_admin_url()).set(database=name)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def empty_postgres() -> Iterator[Engine]:
    """An empty PostgreSQL database of this test's own."""
    with scratch_postgres() as engine:
        yield engine


@pytest.fixture
def empty_sqlite(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'portside.sqlite3'}")
    yield engine
    engine.dispose()


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _describe(item: Any) -> str:
    if isinstance(item, list):
        return "; ".join(_describe(part) for part in item)
    if isinstance(item, tuple):
        return " ".join(_describe(part) for part in item)
    if isinstance(item, ForeignKeyConstraint):
        columns = ", ".join(column.name for column in item.columns)
        return f"{item.table.name}({columns}) -> {item.referred_table.name}"
    if isinstance(item, Table):
        return f"table {item.name}"
    table = getattr(item, "table", None)
    if table is not None and getattr(item, "name", None):
        return f"{table.name}.{item.name}"
    return str(item)


def schema_differences(engine: Engine) -> list[str]:
    """What autogenerate would change to make the database match the models, readably."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return [_describe(diff) for diff in compare_metadata(context, Base.metadata)]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_the_models_have_tables() -> None:
    # Guards the tests below against an empty metadata that would trivially match.
    assert {"webhook_deliveries", "api_tokens", "hosts", "builds"} <= MODEL_TABLES


def test_upgrade_to_head_creates_every_table_of_the_models(empty_postgres: Engine) -> None:
    assert tables(empty_postgres) == set()

    migrate.upgrade(empty_postgres)

    assert tables(empty_postgres) == MODEL_TABLES | {"alembic_version"}
    assert current_revision(empty_postgres) is not None


def test_the_migrated_schema_matches_the_models(empty_postgres: Engine) -> None:
    migrate.upgrade(empty_postgres)

    assert schema_differences(empty_postgres) == []


def test_upgrade_is_idempotent(empty_postgres: Engine) -> None:
    migrate.upgrade(empty_postgres)
    head = current_revision(empty_postgres)

    migrate.upgrade(empty_postgres)

    assert current_revision(empty_postgres) == head
    assert schema_differences(empty_postgres) == []


def test_downgrade_to_base_leaves_only_alembic_version(empty_postgres: Engine) -> None:
    migrate.upgrade(empty_postgres)

    migrate.downgrade(empty_postgres, "base")

    assert tables(empty_postgres) == {"alembic_version"}
    assert current_revision(empty_postgres) is None
    # And it can go up again from there.
    migrate.upgrade(empty_postgres)
    assert schema_differences(empty_postgres) == []


def test_upgrade_and_downgrade_on_sqlite(empty_sqlite: Engine) -> None:
    migrate.upgrade(empty_sqlite)

    assert tables(empty_sqlite) == MODEL_TABLES | {"alembic_version"}
    assert current_revision(empty_sqlite) is not None
    assert schema_differences(empty_sqlite) == []

    migrate.downgrade(empty_sqlite, "base")

    assert tables(empty_sqlite) == {"alembic_version"}
    assert current_revision(empty_sqlite) is None


def payload_compression(engine: Engine) -> str:
    """The column's own compression method ('' = the server's default, pglz)."""
    with engine.connect() as connection:
        method = connection.execute(
            text(
                "SELECT attcompression FROM pg_attribute"
                " WHERE attrelid = 'webhook_deliveries'::regclass AND attname = 'payload'"
            )
        ).scalar()
    return str(method or "")


def test_delivery_bodies_are_compressed_with_lz4(empty_postgres: Engine) -> None:
    with empty_postgres.connect() as connection:
        methods = connection.execute(
            text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
        ).scalar()
    if "lz4" not in (methods or []):
        pytest.skip("this PostgreSQL was built without lz4 (the migration leaves pglz)")
    migrate.upgrade(empty_postgres)
    assert payload_compression(empty_postgres) == "l"
    with empty_postgres.begin() as connection:
        body = '{"zen": "' + "Keep it logically awesome. " * 400 + '"}'
        connection.execute(
            text(
                "INSERT INTO webhook_deliveries (guid, event, payload, status, attempts,"
                " received_at) VALUES ('lz4-check', 'ping', :body, 'ignored', 0, now())"
            ),
            {"body": body},
        )
        stored = connection.execute(
            text("SELECT pg_column_compression(payload), payload FROM webhook_deliveries")
        ).one()
    assert stored == ("lz4", body)

    migrate.downgrade(empty_postgres, "0003")
    assert payload_compression(empty_postgres) == ""


def check_constraints(engine: Engine) -> dict[str, str]:
    """Every check constraint of the database: its name and its text as the database
    keeps it (normalised, so a migrated one and one of ``create_all`` compare)."""
    inspector = inspect(engine)
    return {
        check["name"]: check["sqltext"]
        for table in inspector.get_table_names()
        for check in inspector.get_check_constraints(table)
    }


MODEL_CHECKS = {
    str(constraint.name)
    for table in Base.metadata.tables.values()
    for constraint in table.constraints
    if isinstance(constraint, CheckConstraint)
}


def test_the_models_declare_the_status_checks() -> None:
    # Guards the comparisons below against models that declare none.
    assert {
        "ck_builds_status",
        "ck_webhook_deliveries_status",
        "ck_api_tokens_scope",
    } <= MODEL_CHECKS


def test_migrated_check_constraints_are_the_models(empty_postgres: Engine) -> None:
    migrate.upgrade(empty_postgres)
    with scratch_postgres() as from_models:
        Base.metadata.create_all(from_models)
        declared = check_constraints(from_models)

    assert declared.keys() == MODEL_CHECKS
    assert check_constraints(empty_postgres) == declared


def test_status_checks_downgrade_and_upgrade_again(empty_postgres: Engine) -> None:
    migrate.upgrade(empty_postgres, "0017")
    with empty_postgres.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO webhook_deliveries (guid, event, payload, status, attempts,"
                " received_at) VALUES ('stuck', 'push', '{}', 'processing', 0, now())"
            )
        )
    assert check_constraints(empty_postgres) == {}

    migrate.upgrade(empty_postgres, "0019")
    with empty_postgres.connect() as connection:
        status = connection.execute(text("SELECT status FROM webhook_deliveries")).scalar()
    # Nothing ever set "processing": the re-drive takes such a delivery up as enqueued.
    assert status == "enqueued"
    assert "ck_webhook_deliveries_status" in check_constraints(empty_postgres)

    migrate.downgrade(empty_postgres, "0017")
    assert check_constraints(empty_postgres) == {}
    migrate.upgrade(empty_postgres)
    assert schema_differences(empty_postgres) == []


def test_an_unknown_value_stops_the_upgrade_by_name(empty_postgres: Engine) -> None:
    migrate.upgrade(empty_postgres, "0017")
    with empty_postgres.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO api_tokens (public_id, secret_hash, name, scope, created_at)"
                " VALUES ('p', '\\x00', 'odd', 'superuser', now())"
            )
        )

    with pytest.raises(RuntimeError, match=r"api_tokens\.scope = 'superuser'"):
        migrate.upgrade(empty_postgres, "0019")


def test_sqlite_gets_the_status_checks_and_loses_them(empty_sqlite: Engine) -> None:
    migrate.upgrade(empty_sqlite)
    migrated = check_constraints(empty_sqlite)
    assert migrated.keys() >= {
        "ck_builds_status",
        "ck_api_tokens_builds",
        "ck_services_deploy_when",
    }

    migrate.downgrade(empty_sqlite, "0017")

    assert check_constraints(empty_sqlite) == {}
