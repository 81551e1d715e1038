"""log drivers: a service's environments may forward their output with a Docker logging driver

``services.log_driver`` maps an environment kind (``production``, ``preview``) to a driver
and its options (``contracts.logdrivers``); empty: Docker's default for every kind.

Revision ID: 0013
Revises: 0011
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0013"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(
            sa.Column("log_driver", _json(), nullable=False, server_default=sa.text("'{}'"))
        )
    # The default filled the existing rows; from now on the model sets the value.
    with op.batch_alter_table("services") as batch:
        batch.alter_column("log_driver", server_default=None, existing_type=_json())


def downgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.drop_column("log_driver")
