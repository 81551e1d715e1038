"""check constraints on every status-like column: the database refuses a value that is
not a member of its enum (controlplane.statuses, contracts.statuses)

The values are written out here, as they were at this revision: a migration must mean the
same thing whenever it runs. ``processing`` deliveries (a status nothing set) become
``enqueued``, which the re-drive treats alike; any other value outside its enum stops the
upgrade with the rows' values named, for a person to decide.

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> column -> the values it may hold.
ALLOWED: dict[str, dict[str, tuple[str, ...]]] = {
    "services": {
        "deploy_when": ("pushed", "checks_passed"),
        "preview_protection": ("none", "basic_auth", "ip_allow"),
    },
    "environments": {
        "status": (
            "pending",
            "awaiting_approval",
            "awaiting_checks",
            "building",
            "deploying",
            "running",
            "failed",
            "refused",
            "inactive",
        ),
    },
    "builds": {
        "status": (
            "queued",
            "running",
            "awaiting_checks",
            "awaiting_approval",
            "succeeded",
            "failed",
            "cancelled",
            "superseded",
        ),
    },
    "build_steps": {"status": ("pending", "running", "succeeded", "failed", "skipped")},
    "deployments": {"status": ("pending", "active", "superseded", "failed", "inactive")},
    "webhook_deliveries": {"status": ("received", "enqueued", "processed", "ignored", "failed")},
    "api_tokens": {
        "scope": ("admin", "worker", "read", "host"),
        "builds": ("trusted", "untrusted", "all"),
    },
    "variables": {"kind": ("runtime", "build"), "scope": ("all", "production", "preview")},
    "notification_targets": {"kind": ("webhook", "slack")},
}


def _listed(allowed: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in allowed)


def _refuse_unknown_values() -> None:
    connection = op.get_bind()
    found = []
    for table, columns in ALLOWED.items():
        for column, allowed in columns.items():
            rows = connection.execute(
                sa.text(
                    f"SELECT DISTINCT {column} FROM {table}"
                    f" WHERE {column} NOT IN ({_listed(allowed)})"
                )
            )
            found += [f"{table}.{column} = {value!r}" for (value,) in rows]
    if found:
        raise RuntimeError(f"rows hold values outside their enum: {', '.join(found)}")


def upgrade() -> None:
    op.execute("UPDATE webhook_deliveries SET status = 'enqueued' WHERE status = 'processing'")
    _refuse_unknown_values()
    for table, columns in ALLOWED.items():
        with op.batch_alter_table(table) as batch:
            for column, allowed in columns.items():
                batch.create_check_constraint(
                    op.f(f"ck_{table}_{column}"), f"{column} IN ({_listed(allowed)})"
                )


def downgrade() -> None:
    for table, columns in reversed(ALLOWED.items()):
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_constraint(op.f(f"ck_{table}_{column}"), type_="check")
