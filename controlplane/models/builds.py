"""A build, its steps and the deployments it makes."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.models.base import Base, TimestampMixin, one_of
from controlplane.statuses import BuildStatus, DeploymentStatus, StepStatus

if TYPE_CHECKING:
    from controlplane.models.apps import Environment, Service


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
