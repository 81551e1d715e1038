"""replicas and several hosts: services.replicas and the service_hosts table

``services.replicas`` is how many containers its production environment runs on each of
its hosts (1 for every existing service); ``service_hosts`` lists the hosts beyond
``services.host_id`` that its production environments run on too (none: one host, as
before).

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("replicas", sa.Integer(), nullable=False, server_default="1"))
    # The default filled the existing rows; from now on the model sets the value.
    with op.batch_alter_table("services") as batch:
        batch.alter_column("replicas", server_default=None, existing_type=sa.Integer())
    op.create_table(
        "service_hosts",
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_service_hosts_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_service_hosts_host_id_hosts")
        ),
        sa.PrimaryKeyConstraint("service_id", "host_id", name=op.f("pk_service_hosts")),
    )
    op.create_index(op.f("ix_service_hosts_host_id"), "service_hosts", ["host_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_service_hosts_host_id"), table_name="service_hosts")
    op.drop_table("service_hosts")
    with op.batch_alter_table("services") as batch:
        batch.drop_column("replicas")
