"""deploy any ref: a build remembers the ref it was chosen by; a service may track tags

``builds.ref`` is the branch, tag or commit a person asked to deploy
(``POST /v1/services/{id}/deploy``), or the tag a push created; such a build is ordered
by when it was asked for or pushed, not by ancestry. ``services.track_tags`` is a glob
of tag names (``v*``) whose pushes deploy the service instead of its branch.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("ref", sa.String(length=255), nullable=True))
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("track_tags", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.drop_column("track_tags")
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("ref")
