"""The database refuses a status-like value outside its enum (migration 0019), whatever
writes it: raw SQL here, as a script or a future bug would, on the migrated test database."""

from __future__ import annotations

from enum import StrEnum

import pytest
from sqlalchemy import CheckConstraint, Update, column, table, text, update
from sqlalchemy.exc import IntegrityError

from controlplane import statuses
from controlplane.db import Database
from controlplane.models import (
    ApiToken,
    Base,
    Build,
    BuildStep,
    Deployment,
    Environment,
    Host,
    NotificationTarget,
    Service,
    Variable,
    WebhookDelivery,
)

CONSTRAINED: list[tuple[str, str, type[StrEnum]]] = [
    ("services", "deploy_when", statuses.DeployWhen),
    ("services", "preview_protection", statuses.PreviewProtection),
    ("environments", "status", statuses.EnvironmentStatus),
    ("builds", "status", statuses.BuildStatus),
    ("build_steps", "status", statuses.StepStatus),
    ("deployments", "status", statuses.DeploymentStatus),
    ("webhook_deliveries", "status", statuses.DeliveryStatus),
    ("api_tokens", "scope", statuses.TokenScope),
    ("api_tokens", "builds", statuses.BuildLane),
    ("variables", "kind", statuses.VariableKind),
    ("variables", "scope", statuses.VariableScope),
    ("notification_targets", "kind", statuses.NotificationKind),
]


@pytest.fixture
def one_row_each(database: Database) -> None:
    """A valid row in every table with a constrained column."""
    with database.session_scope() as session:
        host = Host(name="web-1")
        service = Service(name="hello", repository_full_name="octo/hello", branch="main", host=host)
        environment = Environment(service=service, host=host, name="hello", branch="main")
        build = Build(service=service, environment=environment, commit_sha="a" * 40, branch="main")
        build.steps.append(BuildStep(name="clone", position=0))
        session.add_all(
            [
                Deployment(environment=environment, build=build),
                WebhookDelivery(guid="g-1", event="push", body="{}"),
                ApiToken(public_id="p1", secret_hash=b"\0" * 32, name="w", scope="worker"),
            ]
        )
        session.flush()
        session.add_all(
            [
                Variable(service_id=service.id, name="A", value_encrypted=b"x"),
                NotificationTarget(service_id=service.id, url="https://hooks.example/1"),
            ]
        )


def test_every_check_constraint_of_the_models_is_tried_here() -> None:
    declared = {
        str(constraint.name)
        for table in Base.metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }
    assert declared == {f"ck_{table}_{column}" for table, column, _ in CONSTRAINED}


def set_every_row(table_name: str, column_name: str, value: str) -> Update:
    """``UPDATE <table> SET <column> = :value``, a plain statement and no ORM."""
    return update(table(table_name, column(column_name))).values({column_name: value})


@pytest.mark.usefixtures("one_row_each")
@pytest.mark.parametrize(("table_name", "column_name", "allowed"), CONSTRAINED)
def test_the_database_refuses_a_value_outside_the_enum(
    database: Database, table_name: str, column_name: str, allowed: type[StrEnum]
) -> None:
    # Every member is accepted, so the refusal below is the value's, not the statement's.
    for value in allowed:
        with database.engine.begin() as connection:
            updated = connection.execute(set_every_row(table_name, column_name, value))
        assert updated.rowcount == 1

    with (
        pytest.raises(IntegrityError, match=f"ck_{table_name}_{column_name}"),
        database.engine.begin() as connection,
    ):
        connection.execute(set_every_row(table_name, column_name, "bogus"))


def test_a_raw_insert_of_an_unknown_status_is_refused(database: Database) -> None:
    with (
        pytest.raises(IntegrityError, match="ck_webhook_deliveries_status"),
        database.engine.begin() as connection,
    ):
        connection.execute(
            text(
                "INSERT INTO webhook_deliveries (guid, event, payload, status, attempts,"
                " received_at) VALUES ('g-2', 'push', '{}', 'processing', 0, now())"
            )
        )
