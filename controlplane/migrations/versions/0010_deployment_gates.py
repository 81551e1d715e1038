"""deployment gates: wait for the commit's checks, or for a person's approval

``services.deploy_when`` is ``pushed`` or ``checks_passed``, with ``required_checks``
(names; empty: every check but Portside's own) and ``checks_timeout`` (seconds);
``environments.approval_required`` holds its deployments for an approval, and
``environments.held_build_id`` names the build held at a gate for it; ``builds.held_at``
is when a gate held the build, whose status may now be 32 characters long.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(
            sa.Column("deploy_when", sa.String(length=16), nullable=False, server_default="pushed")
        )
        batch.add_column(
            sa.Column("required_checks", _json(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch.add_column(
            sa.Column("checks_timeout", sa.Integer(), nullable=False, server_default="1800")
        )
    with op.batch_alter_table("environments") as batch:
        batch.add_column(
            sa.Column("approval_required", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("held_build_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_environments_held_build_id_builds",
            "builds",
            ["held_build_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("held_at", sa.DateTime(timezone=True), nullable=True))
        # "awaiting_approval" is longer than the 16 characters statuses had.
        batch.alter_column("status", type_=sa.String(length=32), existing_type=sa.String(length=16))
    # The defaults filled the existing rows; from now on the models set the values.
    with op.batch_alter_table("services") as batch:
        batch.alter_column("deploy_when", server_default=None, existing_type=sa.String(16))
        batch.alter_column("required_checks", server_default=None, existing_type=_json())
        batch.alter_column("checks_timeout", server_default=None, existing_type=sa.Integer())
    with op.batch_alter_table("environments") as batch:
        batch.alter_column("approval_required", server_default=None, existing_type=sa.Boolean())


def downgrade() -> None:
    op.execute(
        "UPDATE builds SET status = 'failed' "
        "WHERE status IN ('awaiting_checks', 'awaiting_approval')"
    )
    with op.batch_alter_table("builds") as batch:
        batch.alter_column("status", type_=sa.String(length=16), existing_type=sa.String(length=32))
        batch.drop_column("held_at")
    with op.batch_alter_table("environments") as batch:
        batch.drop_constraint("fk_environments_held_build_id_builds", type_="foreignkey")
        batch.drop_column("held_build_id")
        batch.drop_column("approval_required")
    with op.batch_alter_table("services") as batch:
        batch.drop_column("checks_timeout")
        batch.drop_column("required_checks")
        batch.drop_column("deploy_when")
