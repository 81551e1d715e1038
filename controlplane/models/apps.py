"""What runs where: hosts, services, their environments and variables."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.models.base import Base, TimestampMixin, one_of, utcnow
from controlplane.statuses import (
    DeployWhen,
    EnvironmentStatus,
    PreviewProtection,
    VariableKind,
    VariableScope,
)

if TYPE_CHECKING:
    from controlplane.models.builds import Build, Deployment
    from controlplane.models.sources import Repository


class Host(TimestampMixin, Base):
    """A server running ``portside agent``; ``generation`` versions its desired state."""

    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=1)
    accepts_previews: Mapped[bool] = mapped_column(Boolean, default=False)
    # Runs code nobody on the team reviewed (fork previews); never production.
    untrusted: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the agent reported having applied: environments stay pending until then.
    applied_generation: Mapped[int] = mapped_column(BigInteger, default=0)
    entrypoint: Mapped[str] = mapped_column(String(64), default="websecure")
    cert_resolver: Mapped[str] = mapped_column(String(64), default="letsencrypt")
    last_seen_at: Mapped[dt.datetime | None]
    agent_version: Mapped[str | None] = mapped_column(String(64))
    observed: Mapped[dict[str, Any] | None]


class Service(TimestampMixin, Base):
    """Something Portside deploys: one repository branch, built and run on one host."""

    __tablename__ = "services"
    __table_args__ = (
        one_of("deploy_when", DeployWhen),
        one_of("preview_protection", PreviewProtection),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    repository_full_name: Mapped[str] = mapped_column(String(255), index=True)
    repository_id: Mapped[int | None] = mapped_column(ForeignKey("repositories.id"), index=True)
    branch: Mapped[str] = mapped_column(String(255))
    # A glob of tags (``v*``) whose pushes deploy production instead of the branch's.
    track_tags: Mapped[str | None] = mapped_column(String(255))
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    compose_path: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    domain: Mapped[str | None] = mapped_column(String(253), unique=True)
    watch_paths: Mapped[list[Any]] = mapped_column(default=list)
    preview_ttl_seconds: Mapped[int] = mapped_column(Integer, default=7 * 24 * 3600)
    max_previews: Mapped[int] = mapped_column(Integer, default=10)
    # Compose keys beyond the allow-list that an admin allowed for production builds
    # (service-level key names such as "cap_add"); fork builds never get them.
    compose_allow: Mapped[list[Any]] = mapped_column(default=list)
    previews_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    fork_previews: Mapped[bool] = mapped_column(Boolean, default=True)
    # An admin's explicit choice to run this service's fork previews on trusted hosts.
    fork_previews_on_trusted_hosts: Mapped[bool] = mapped_column(Boolean, default=False)
    health_check_path: Mapped[str] = mapped_column(String(255), default="/")
    cpu_limit: Mapped[float | None]
    memory_limit: Mapped[str | None] = mapped_column(String(16))
    restart_policy: Mapped[str] = mapped_column(String(32), default="unless-stopped")
    # Who may open its previews: anyone ("none"), a basic-auth login, or source networks.
    preview_protection: Mapped[str] = mapped_column(String(16), default=PreviewProtection.NONE)
    preview_allow_networks: Mapped[list[Any]] = mapped_column(default=list)
    # The basic-auth login as an htpasswd line (user:bcrypt), encrypted; the password
    # itself is never stored (shown once when generated).
    preview_htpasswd_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Containers of its production environment on each of its hosts (single-container).
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    # A Docker logging driver per environment kind ({"production": {"driver", "options"}}),
    # checked by contracts.logdrivers; a kind absent runs with Docker's default.
    log_driver: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # When a build may deploy (statuses.DeployWhen): "checks_passed" holds it until the
    # commit's checks on GitHub passed (services.checks): those named, or every one but
    # Portside's own when the list is empty; failed when none passed in checks_timeout s.
    deploy_when: Mapped[str] = mapped_column(String(16), default=DeployWhen.PUSHED)
    required_checks: Mapped[list[Any]] = mapped_column(default=list)
    checks_timeout: Mapped[int] = mapped_column(Integer, default=1800)
    # A service tracking a git URL instead of a GitHub repository (polled with ls-remote):
    # its https token or SSH deploy key encrypted, how often it is polled (seconds), the
    # branch head seen last and when.
    git_url: Mapped[str | None] = mapped_column(String(1024))
    git_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    git_ssh_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    poll_interval: Mapped[int] = mapped_column(Integer, default=60)
    git_last_sha: Mapped[str | None] = mapped_column(String(40))
    git_polled_at: Mapped[dt.datetime | None]
    deleted_at: Mapped[dt.datetime | None]

    host: Mapped[Host] = relationship()
    repository: Mapped[Repository | None] = relationship()
    environments: Mapped[list[Environment]] = relationship(back_populates="service")
    # Hosts beyond ``host`` that its production environments run on too (previews do not).
    extra_hosts: Mapped[list[ServiceHost]] = relationship(
        order_by="ServiceHost.position", cascade="all, delete-orphan"
    )


class ServiceHost(Base):
    """A further host of a service: its production environments run there as well."""

    __tablename__ = "service_hosts"

    service_id: Mapped[int] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
    )
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)

    host: Mapped[Host] = relationship()


class Environment(TimestampMixin, Base):
    """Where a service runs: its production environment, or one preview per pull request."""

    __tablename__ = "environments"
    __table_args__ = (one_of("status", EnvironmentStatus),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="production")
    status: Mapped[str] = mapped_column(String(32), default=EnvironmentStatus.PENDING)
    # Why the environment is refused or awaiting something, for a person to read.
    status_reason: Mapped[str | None] = mapped_column(Text)
    branch: Mapped[str] = mapped_column(String(255))
    head_sha: Mapped[str | None] = mapped_column(String(40))
    pr_number: Mapped[int | None] = mapped_column(Integer)
    pr_author: Mapped[str | None] = mapped_column(String(255))
    from_fork: Mapped[bool] = mapped_column(Boolean, default=False)
    domain: Mapped[str | None] = mapped_column(String(253))
    address: Mapped[str | None] = mapped_column(String(255))
    current_deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", use_alter=True)
    )
    # Moves by compare-and-swap whenever the current deployment changes.
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    last_activity_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(255))
    closed_reason: Mapped[str | None] = mapped_column(String(255))
    # The fork commit a person approved to build and run (a newer head needs a new one).
    approved_sha: Mapped[str | None] = mapped_column(String(40))
    # The fork commit a person approved to receive secrets; per commit, like approved_sha.
    secrets_approved_sha: Mapped[str | None] = mapped_column(String(40))
    github_comment_id: Mapped[int | None] = mapped_column(BigInteger)
    # A torn-down preview whose images the registry may still hold: set by the teardown,
    # cleared once every one is deleted (services.previews.delete_images; retried until).
    images_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    # A deployment to it waits for a person's approval (services.approvals).
    approval_required: Mapped[bool] = mapped_column(Boolean, default=False)
    # The build held at a gate (services.gates) before it becomes this environment's
    # deployment: its own build, or another environment's being promoted to it.
    held_build_id: Mapped[int | None] = mapped_column(
        ForeignKey("builds.id", use_alter=True, ondelete="SET NULL")
    )

    service: Mapped[Service] = relationship(back_populates="environments")
    host: Mapped[Host] = relationship()

    def secrets_approved_for(self, commit_sha: str | None) -> bool:
        """A person approved handing secrets to this fork's code at exactly that commit."""
        return commit_sha is not None and self.secrets_approved_sha == commit_sha

    current_deployment: Mapped[Deployment | None] = relationship(
        foreign_keys=[current_deployment_id], post_update=True
    )
    held_build: Mapped[Build | None] = relationship(foreign_keys=[held_build_id], post_update=True)


class Variable(TimestampMixin, Base):
    """A runtime variable of a service (or one environment); secret values are encrypted."""

    __tablename__ = "variables"
    __table_args__ = (
        UniqueConstraint("service_id", "environment_id", "kind", "name"),
        one_of("kind", VariableKind),
        one_of("scope", VariableScope),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"))
    name: Mapped[str] = mapped_column(String(255))
    # "runtime": given to the running container; "build": a docker build argument.
    kind: Mapped[str] = mapped_column(String(16), default=VariableKind.RUNTIME)
    # Which environments get it: "all", "production" or "preview".
    scope: Mapped[str] = mapped_column(String(16), default=VariableScope.ALL)
    value_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    is_secret: Mapped[bool] = mapped_column(Boolean, default=True)
