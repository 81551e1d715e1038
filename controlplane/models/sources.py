"""Where code comes from: GitHub App installations and their registration, and the
repositories Portside may build."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.models.base import Base, TimestampMixin, utcnow


class Installation(TimestampMixin, Base):
    """A GitHub App installation; its id is GitHub's."""

    __tablename__ = "installations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    account_login: Mapped[str] = mapped_column(String(255))
    account_type: Mapped[str] = mapped_column(String(32), default="User")
    suspended_at: Mapped[dt.datetime | None]
    deleted_at: Mapped[dt.datetime | None]

    repositories: Mapped[list[Repository]] = relationship(back_populates="installation")

    @property
    def active(self) -> bool:
        return self.deleted_at is None and self.suspended_at is None


class Repository(TimestampMixin, Base):
    """A repository an installation grants; its id is GitHub's, so renames keep services."""

    __tablename__ = "repositories"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    installation_id: Mapped[int] = mapped_column(ForeignKey("installations.id"), index=True)
    full_name: Mapped[str] = mapped_column(String(255), index=True)
    private: Mapped[bool] = mapped_column(Boolean, default=True)
    default_branch: Mapped[str | None] = mapped_column(String(255))
    clone_url: Mapped[str | None] = mapped_column(String(1024))
    compose_path: Mapped[str | None] = mapped_column(String(255))
    compose_checked_at: Mapped[dt.datetime | None]
    removed_at: Mapped[dt.datetime | None]

    installation: Mapped[Installation] = relationship(back_populates="repositories")


class GitHubAppRegistration(Base):
    """The GitHub App registered from the dashboard (GitHub's App manifest flow): used when
    no PORTSIDE_GITHUB_APP_ID is set. One row; its secrets are encrypted at rest."""

    __tablename__ = "github_app_registrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(BigInteger)
    slug: Mapped[str] = mapped_column(String(255))
    html_url: Mapped[str] = mapped_column(String(2048))
    owner_login: Mapped[str | None] = mapped_column(String(255))
    client_id: Mapped[str | None] = mapped_column(String(255))
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    webhook_secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    client_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    registered_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
