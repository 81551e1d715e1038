"""Who may do what, and what was done: API tokens, registry credentials, the audit
trail and notification targets."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.models.base import Base, TimestampMixin, one_of, utcnow
from controlplane.statuses import BuildLane, NotificationKind, TokenScope, values

if TYPE_CHECKING:
    from controlplane.models.apps import Host


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored, its public id finds it."""

    __tablename__ = "api_tokens"
    __table_args__ = (one_of("scope", TokenScope), one_of("builds", BuildLane))

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    name: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(String(16))
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    # A worker token's lane (a BuildLane; None is "trusted"), so the token of a
    # worker that runs forks' code never claims, nor gets the secrets of, another build.
    builds: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]

    host: Mapped[Host | None] = relationship()

    @property
    def build_lane(self) -> str:
        """The builds this token may claim: an admin token any, a worker token its lane."""
        if self.scope == TokenScope.ADMIN:
            return BuildLane.ALL
        return self.builds or BuildLane.TRUSTED


class RegistryCredential(TimestampMixin, Base):
    """Credentials of an image registry: the global default (no installation) or an
    installation's override; handed to build workers and agents when needed."""

    __tablename__ = "registries"
    __table_args__ = (UniqueConstraint("address", "installation_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(255))
    installation_id: Mapped[int | None] = mapped_column(ForeignKey("installations.id"), index=True)
    username: Mapped[str | None] = mapped_column(String(255))
    password_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Read-only credentials handed to agents; the push credentials above stay with builders.
    pull_username: Mapped[str | None] = mapped_column(String(255))
    pull_password_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)


class AuditEvent(Base):
    """Who changed what and when: every API/CLI change, deploy and teardown."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


NOTIFICATION_KINDS = values(NotificationKind)


class NotificationTarget(TimestampMixin, Base):
    """Where a service's deploy events are sent: a signed JSON webhook or a Slack
    incoming webhook; the signing secret is encrypted at rest."""

    __tablename__ = "notification_targets"
    __table_args__ = (one_of("kind", NotificationKind),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default=NotificationKind.WEBHOOK)
    url: Mapped[str] = mapped_column(String(2048))
    secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
