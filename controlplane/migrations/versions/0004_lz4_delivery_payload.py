"""webhook delivery bodies are compressed with lz4 (PostgreSQL)

A delivery body (a push is ~7 KB) is compressed when it is stored; pglz, the default,
costs about a quarter of PostgreSQL's CPU per delivery on the webhook path, lz4 a fraction
of it. Only where the server was built with lz4 (PostgreSQL 14 and later); rows already
stored keep their compression.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _server_has_lz4() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    methods = bind.execute(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    ).scalar()
    return "lz4" in (methods or [])


def upgrade() -> None:
    if _server_has_lz4():
        op.execute("ALTER TABLE webhook_deliveries ALTER COLUMN payload SET COMPRESSION lz4")


def downgrade() -> None:
    if _server_has_lz4():
        op.execute("ALTER TABLE webhook_deliveries ALTER COLUMN payload SET COMPRESSION DEFAULT")
