"""a torn-down preview remembers that the registry still holds its images

Preview teardown deletes the preview's images from the registry; a registry that refuses
(wrong credentials, a token flow the old client did not speak) used to leave them there
silently. ``images_pending`` stays set on the environment until every one is deleted, so
the dashboard and the API show it and the periodic clean-up tries again.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.add_column(
            sa.Column("images_pending", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # The model supplies the value from now on, like every other boolean column.
    with op.batch_alter_table("environments") as batch:
        batch.alter_column("images_pending", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("images_pending")
