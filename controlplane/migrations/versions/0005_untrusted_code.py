"""untrusted code: per-commit fork approval, untrusted hosts and builds, compose allowances

A fork's pull request is built and run only after a person approved that exact commit
(``approved_sha``), and gets secrets only for the commit approved for them
(``secrets_approved_sha``, replacing a yes/no that outlived every later push). Fork
builds are marked ``untrusted`` and their previews go to hosts marked ``untrusted``.
``allow_privileged`` becomes ``compose_allow``: the compose keys beyond the allow-list an
admin allowed for production builds. Builds remember the worker token that holds their
running step and the compose service their file routes, and worker tokens a lane
(``builds``: the trusted builds, forks' or all); registries get read-only credentials for
agents. Environment statuses grow ``awaiting_approval`` and ``refused`` (with
``status_reason``).

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What ``allow_privileged`` let through before the allow-list existed.
PRIVILEGED_KEYS = (
    "privileged",
    "cap_add",
    "devices",
    "security_opt",
    "network_mode",
    "pid",
    "ipc",
    "userns_mode",
)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(
            sa.Column("untrusted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("services") as batch:
        batch.add_column(
            sa.Column("compose_allow", _json(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch.add_column(
            sa.Column(
                "fork_previews_on_trusted_hosts",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
    services = sa.table(
        "services",
        sa.column("allow_privileged", sa.Boolean()),
        sa.column("compose_allow", _json()),
    )
    op.execute(
        services.update()
        .where(services.c.allow_privileged.is_(True))
        .values(compose_allow=list(PRIVILEGED_KEYS))
    )
    with op.batch_alter_table("services") as batch:
        batch.drop_column("allow_privileged")
    with op.batch_alter_table("environments") as batch:
        batch.alter_column("status", type_=sa.String(length=32), existing_type=sa.String(length=16))
        batch.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("approved_sha", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("secrets_approved_sha", sa.String(length=40), nullable=True))
    environments = sa.table(
        "environments",
        sa.column("secrets_approved", sa.Boolean()),
        sa.column("secrets_approved_sha", sa.String()),
        sa.column("approved_sha", sa.String()),
        sa.column("head_sha", sa.String()),
        sa.column("from_fork", sa.Boolean()),
    )
    # What ran before this migration was approved by being allowed to run: keep it running,
    # and keep secrets where a person had approved them (for the commit they see now).
    op.execute(
        environments.update()
        .where(environments.c.from_fork.is_(True))
        .values(approved_sha=environments.c.head_sha)
    )
    op.execute(
        environments.update()
        .where(environments.c.secrets_approved.is_(True))
        .values(secrets_approved_sha=environments.c.head_sha)
    )
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("secrets_approved")
    with op.batch_alter_table("builds") as batch:
        batch.add_column(
            sa.Column("untrusted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("worker_token_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("routed_service", sa.String(length=63), nullable=True))
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("builds", sa.String(length=16), nullable=True))
    with op.batch_alter_table("registries") as batch:
        batch.add_column(sa.Column("pull_username", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("pull_password_encrypted", sa.LargeBinary(), nullable=True))
    # The defaults only filled the rows already there; the models set every new row's.
    for table, column in (
        ("hosts", "untrusted"),
        ("services", "compose_allow"),
        ("services", "fork_previews_on_trusted_hosts"),
        ("builds", "untrusted"),
    ):
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("builds")
    with op.batch_alter_table("registries") as batch:
        batch.drop_column("pull_password_encrypted")
        batch.drop_column("pull_username")
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("routed_service")
        batch.drop_column("worker_token_id")
        batch.drop_column("untrusted")
    with op.batch_alter_table("environments") as batch:
        batch.add_column(
            sa.Column("secrets_approved", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    environments = sa.table(
        "environments",
        sa.column("secrets_approved", sa.Boolean()),
        sa.column("secrets_approved_sha", sa.String()),
        sa.column("status", sa.String()),
        sa.column("status_reason", sa.Text()),
    )
    op.execute(
        environments.update()
        .where(environments.c.secrets_approved_sha.is_not(None))
        .values(secrets_approved=True)
    )
    op.execute(
        environments.update()
        .where(environments.c.status.in_(("awaiting_approval", "refused")))
        .values(status="pending")
    )
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("secrets_approved_sha")
        batch.drop_column("approved_sha")
        batch.drop_column("status_reason")
        batch.alter_column("status", type_=sa.String(length=16), existing_type=sa.String(length=32))
    with op.batch_alter_table("services") as batch:
        batch.add_column(
            sa.Column("allow_privileged", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    services = sa.table(
        "services",
        sa.column("allow_privileged", sa.Boolean()),
        sa.column("compose_allow", _json()),
    )
    op.execute(
        services.update()
        .where(sa.func.coalesce(sa.cast(services.c.compose_allow, sa.Text), "[]") != "[]")
        .values(allow_privileged=True)
    )
    with op.batch_alter_table("services") as batch:
        batch.drop_column("fork_previews_on_trusted_hosts")
        batch.drop_column("compose_allow")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("untrusted")
