"""protected previews: a service's previews may need a basic-auth login or a source network

``services.preview_protection`` is ``none``, ``basic_auth`` or ``ip_allow``;
``preview_allow_networks`` the CIDRs ``ip_allow`` lets in; ``preview_htpasswd_encrypted``
the basic-auth login as an encrypted htpasswd line (``user:bcrypt``).

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(
            sa.Column(
                "preview_protection",
                sa.String(length=16),
                nullable=False,
                server_default="none",
            )
        )
        batch.add_column(
            sa.Column(
                "preview_allow_networks", _json(), nullable=False, server_default=sa.text("'[]'")
            )
        )
        batch.add_column(sa.Column("preview_htpasswd_encrypted", sa.LargeBinary(), nullable=True))
    # The defaults filled the existing rows; from now on the models set the values.
    with op.batch_alter_table("services") as batch:
        batch.alter_column(
            "preview_protection", server_default=None, existing_type=sa.String(length=16)
        )
        batch.alter_column("preview_allow_networks", server_default=None, existing_type=_json())


def downgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.drop_column("preview_htpasswd_encrypted")
        batch.drop_column("preview_allow_networks")
        batch.drop_column("preview_protection")
