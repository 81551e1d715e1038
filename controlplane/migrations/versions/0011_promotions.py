"""promotions: a deployment may be another environment's build, deployed as it is

``deployments.promoted_from_id`` (the environment it came from), ``promoted_by`` (who)
and ``promoted_at`` (when: a promotion is ordered by that time, as a chosen ref), and
``github_deployment_id``, a promotion's own GitHub deployment (a build's own deploys keep
theirs on the build). Staging environments need no column: ``environments.kind`` holds
their name and ``environments.branch`` the branch they track.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("promoted_from_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("promoted_by", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("github_deployment_id", sa.BigInteger(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_deployments_promoted_from_id_environments"),
            "environments",
            ["promoted_from_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_constraint(
            op.f("fk_deployments_promoted_from_id_environments"), type_="foreignkey"
        )
        batch.drop_column("github_deployment_id")
        batch.drop_column("promoted_at")
        batch.drop_column("promoted_by")
        batch.drop_column("promoted_from_id")
