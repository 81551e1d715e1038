"""webhook deliveries keep the raw body as text

The receiver stores the body exactly as GitHub signed it; PostgreSQL no longer parses
every delivery into JSONB on the hot path (it is parsed when processed).

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "webhook_deliveries",
            "payload",
            type_=sa.Text(),
            existing_type=postgresql.JSONB(),
            existing_nullable=False,
            postgresql_using="payload::text",
        )
    else:
        with op.batch_alter_table("webhook_deliveries") as batch:
            batch.alter_column(
                "payload", type_=sa.Text(), existing_type=sa.JSON(), existing_nullable=False
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "webhook_deliveries",
            "payload",
            type_=postgresql.JSONB(),
            existing_type=sa.Text(),
            existing_nullable=False,
            postgresql_using="payload::jsonb",
        )
    else:
        with op.batch_alter_table("webhook_deliveries") as batch:
            batch.alter_column(
                "payload", type_=sa.JSON(), existing_type=sa.Text(), existing_nullable=False
            )
