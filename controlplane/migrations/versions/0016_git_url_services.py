"""services tracking a git URL: polled with ls-remote instead of GitHub's webhooks

``services.git_url`` (null for a GitHub service), its credentials encrypted
(``git_token_encrypted``, ``git_ssh_key_encrypted``), ``poll_interval`` (seconds, default
60), and the branch head seen last (``git_last_sha``, ``git_polled_at``).

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("git_url", sa.String(length=1024), nullable=True))
        batch.add_column(sa.Column("git_token_encrypted", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("git_ssh_key_encrypted", sa.LargeBinary(), nullable=True))
        batch.add_column(
            sa.Column("poll_interval", sa.Integer(), nullable=False, server_default="60")
        )
        batch.add_column(sa.Column("git_last_sha", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("git_polled_at", sa.DateTime(timezone=True), nullable=True))
    # The default filled the existing rows; from now on the model sets the value.
    with op.batch_alter_table("services") as batch:
        batch.alter_column("poll_interval", server_default=None, existing_type=sa.Integer())


def downgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.drop_column("git_polled_at")
        batch.drop_column("git_last_sha")
        batch.drop_column("poll_interval")
        batch.drop_column("git_ssh_key_encrypted")
        batch.drop_column("git_token_encrypted")
        batch.drop_column("git_url")
