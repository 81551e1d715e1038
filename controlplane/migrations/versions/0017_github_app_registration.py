"""the GitHub App registered from the dashboard with GitHub's App manifest flow

``github_app_registrations`` holds its id, slug and encrypted private key, webhook secret
and client secret; processes use it when no PORTSIDE_GITHUB_APP_ID is configured.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "github_app_registrations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("slug", sa.String(length=255), nullable=False),
        sa.Column("html_url", sa.String(length=2048), nullable=False),
        sa.Column("owner_login", sa.String(length=255), nullable=True),
        sa.Column("client_id", sa.String(length=255), nullable=True),
        sa.Column("private_key_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("webhook_secret_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("client_secret_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("registered_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_github_app_registrations")),
    )


def downgrade() -> None:
    op.drop_table("github_app_registrations")
