"""a build remembers its Check Run on GitHub

Every build is a Check Run named ``Portside`` on its head commit; ``check_run_id`` keeps
the run's id so each later event edits that run instead of looking it up (the lookup by
head SHA, name and external id stays, for an event whose answer was lost).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("check_run_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("check_run_id")
