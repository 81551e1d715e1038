"""webhook delivery rows cost less to insert: lz4 bodies, no unused index

Every delivery is inserted on the path GitHub waits on. Its body (a push is ~7 KB) is
compressed when stored: pglz, the default, costs about a quarter of PostgreSQL's CPU
per delivery, lz4 a fraction of it (only where the server was built with lz4, PostgreSQL
14 and later; rows already stored keep theirs). The index on ``installation_id`` served
no query (deliveries are routed by their payload when processed) and cost a B-tree
insert per delivery.

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

INSTALLATION_INDEX = "ix_webhook_deliveries_installation_id"


def _server_has_lz4() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    methods = bind.execute(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    ).scalar()
    return "lz4" in (methods or [])


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_index(INSTALLATION_INDEX)
    if _server_has_lz4():
        op.execute("ALTER TABLE webhook_deliveries ALTER COLUMN payload SET COMPRESSION lz4")


def downgrade() -> None:
    if _server_has_lz4():
        op.execute("ALTER TABLE webhook_deliveries ALTER COLUMN payload SET COMPRESSION DEFAULT")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.create_index(INSTALLATION_INDEX, ["installation_id"], unique=False)
