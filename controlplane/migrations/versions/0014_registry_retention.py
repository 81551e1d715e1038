"""a build remembers that the registry retention deleted its images

The registry keeps the last ``PORTSIDE_REGISTRY_KEEP`` production images of each
service; older ones are deleted by digest (``services.retention``). ``images_deleted_at``
marks a build whose images are all gone, so that each periodic pass looks only at the
builds it has yet to clean instead of deleting every old digest again.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("images_deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("images_deleted_at")
