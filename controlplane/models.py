"""SQLAlchemy models: the records of the whole flow, from a delivery to a running container.

PostgreSQL is the state of record; SQLite works for the embedded default. Status columns
are plain strings holding a member of their enum (:mod:`controlplane.statuses`), which a
check constraint per column makes the database enforce (migration 0019).
"""

from __future__ import annotations

import datetime as dt
import json
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from controlplane.statuses import (
    BuildLane,
    BuildStatus,
    DeliveryStatus,
    DeploymentStatus,
    DeployWhen,
    EnvironmentStatus,
    NotificationKind,
    PreviewProtection,
    StepStatus,
    TokenScope,
    VariableKind,
    VariableScope,
    values,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


def one_of(column: str, allowed: type[StrEnum]) -> CheckConstraint:
    """The check that ``column`` holds a value of ``allowed`` (NULL passes, as in SQL), named
    ``ck_<table>_<column>``; migration 0019 creates the same ones."""
    listed = ", ".join(f"'{value}'" for value in values(allowed))
    return CheckConstraint(f"{column} IN ({listed})", name=column)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """``DateTime(timezone=True)`` read back aware on SQLite too: SQLite keeps no zone,
    and a naive value subtracted from :func:`utcnow` raised (``make dev`` could build
    nothing past the clone step). Values are stored in UTC, so UTC is their zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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


class Build(TimestampMixin, Base):
    """One run of the pipeline for one commit of one environment."""

    __tablename__ = "builds"
    __table_args__ = (
        # A delivery starts at most one build per environment and commit.
        UniqueConstraint("environment_id", "commit_sha", "trigger_key"),
        Index("ix_builds_status_created", "status", "created_at"),
        one_of("status", BuildStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"), index=True)
    commit_sha: Mapped[str] = mapped_column(String(40))
    branch: Mapped[str] = mapped_column(String(255))
    trigger_key: Mapped[str] = mapped_column(String(64), default="auto")
    # The branch, tag or commit a person chose to deploy, or the tag a push created: such
    # a build is ordered by when it was asked for or pushed, not by ancestry.
    ref: Mapped[str | None] = mapped_column(String(255))
    # Code from a fork: no network, no secrets, no cache, images of its own, untrusted workers.
    untrusted: Mapped[bool] = mapped_column(Boolean, default=False)
    # The worker token holding the running step: only it may fetch this build's credentials.
    worker_token_id: Mapped[int | None] = mapped_column(Integer)
    # When GitHub received the push (its payload's repository.pushed_at): orders pushes
    # whose deliveries arrive out of order.
    pushed_at: Mapped[dt.datetime | None]
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("webhook_deliveries.id"))
    status: Mapped[str] = mapped_column(String(32), default=BuildStatus.QUEUED)
    commit_message: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(255))
    worker: Mapped[str | None] = mapped_column(String(255))
    images: Mapped[dict[str, Any]] = mapped_column(default=dict)
    compose: Mapped[str | None] = mapped_column(Text)
    # The compose service the file routes (contracts.compose_routes), as the worker found it.
    routed_service: Mapped[str | None] = mapped_column(String(63))
    error: Mapped[str | None] = mapped_column(Text)
    failed_step: Mapped[str | None] = mapped_column(String(32))
    github_deployment_id: Mapped[int | None] = mapped_column(BigInteger)
    # The build's Check Run on GitHub (named feedback.CHECK_NAME, external id = build id).
    check_run_id: Mapped[int | None] = mapped_column(BigInteger)
    # When it came to deploy and a gate held it (awaiting_checks: the timeout runs from).
    held_at: Mapped[dt.datetime | None]
    # Bumped when a build is taken up again after its worker died; messages of an
    # earlier attempt are then ignored.
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    heartbeat_at: Mapped[dt.datetime | None]
    log: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    # When the registry retention deleted its images (services.retention; migration 0014).
    images_deleted_at: Mapped[dt.datetime | None]

    steps: Mapped[list[BuildStep]] = relationship(
        back_populates="build", order_by="BuildStep.position", cascade="all, delete-orphan"
    )
    service: Mapped[Service] = relationship()
    environment: Mapped[Environment] = relationship(foreign_keys=[environment_id])


class BuildStep(Base):
    """One step of a build's chain; (build, name) is the idempotency key of its task."""

    __tablename__ = "build_steps"
    __table_args__ = (UniqueConstraint("build_id", "name"), one_of("status", StepStatus))

    id: Mapped[int] = mapped_column(primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=StepStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    build: Mapped[Build] = relationship(back_populates="steps")


class Deployment(TimestampMixin, Base):
    """A build made the desired state of an environment."""

    __tablename__ = "deployments"
    __table_args__ = (
        UniqueConstraint("environment_id", "build_id"),
        one_of("status", DeploymentStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"), index=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=DeploymentStatus.PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    activated_at: Mapped[dt.datetime | None]
    # A promotion (services.promotion): another environment's build deployed here as it
    # is, by whom, from which environment and when (ordered by that time, as a chosen ref).
    promoted_from_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"))
    promoted_by: Mapped[str | None] = mapped_column(String(255))
    promoted_at: Mapped[dt.datetime | None]
    # A promotion's own GitHub deployment (a build's own deploys keep theirs on the build).
    github_deployment_id: Mapped[int | None] = mapped_column(BigInteger)

    environment: Mapped[Environment] = relationship(foreign_keys=[environment_id])
    build: Mapped[Build] = relationship()
    promoted_from: Mapped[Environment | None] = relationship(foreign_keys=[promoted_from_id])


class WebhookDelivery(Base):
    """A verified GitHub delivery, committed before it is enqueued (the outbox)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_received", "status", "received_at"),
        one_of("status", DeliveryStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(64), unique=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str | None] = mapped_column(String(64))
    hook_id: Mapped[str | None] = mapped_column(String(32))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    repository_id: Mapped[int | None] = mapped_column(BigInteger)
    repository_full_name: Mapped[str | None] = mapped_column(String(255))
    # The body exactly as GitHub signed it; parsed when processed, not when received.
    body: Mapped[str] = mapped_column("payload", Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.RECEIVED)
    outcome: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[dt.datetime | None]
    processed_at: Mapped[dt.datetime | None]

    @property
    def payload(self) -> dict[str, Any]:
        """The parsed body (a JSON object: the receiver refused anything else)."""
        cached: dict[str, Any] | None = self.__dict__.get("_payload")
        if cached is None:
            cached = json.loads(self.body)
            self.__dict__["_payload"] = cached
        return cached


class OutboxMessage(Base):
    """Work to send once the transaction that wrote it commits (controlplane.services.
    effects): the relay (tasks.relay) sends it and deletes the row in one transaction."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    # What to send (an effects.Kind); the relay maps it to a control task.
    kind: Mapped[str] = mapped_column(String(32))
    args: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


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
