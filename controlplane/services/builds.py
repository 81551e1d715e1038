"""The control plane's half of the pipeline: build workers claim steps, report them, and
record artifacts and deployments through the API; everything here is idempotent.

A step is keyed by (build, attempt, step): a redelivered message of a finished step, or
of an attempt that was taken over after its worker died, is refused with a Conflict and
the worker drops it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controlplane.errors import Conflict, NotFound, ValidationFailed
from controlplane.models import (
    Build,
    BuildStep,
    Deployment,
    Environment,
    Service,
    utcnow,
)
from controlplane.services import audit, desired, effects
from controlplane.services.pushes import PIPELINE_STEPS

log = logging.getLogger(__name__)

FINISHED = ("succeeded", "failed", "cancelled", "superseded")


@dataclass(frozen=True, slots=True)
class BuildSpec:
    """Everything a build worker needs for one step, and nothing it must not carry."""

    build_id: int
    attempt: int
    step: str
    service_id: int
    service: str
    environment: str
    repository: str
    installation_id: int | None
    clone_url: str | None
    commit_sha: str
    branch: str
    compose_path: str | None
    allow_privileged: bool
    images: dict[str, Any] = field(default_factory=dict)


def get_build(session: Session, build_id: int, *, lock: bool = False) -> Build:
    build = session.get(Build, build_id, with_for_update=lock)
    if build is None:
        raise NotFound(f"build {build_id} does not exist")
    return build


def _step(build: Build, name: str) -> BuildStep:
    for step in build.steps:
        if step.name == name:
            return step
    raise NotFound(f"build {build.id} has no step {name!r}")


# A step whose worker sent a heartbeat this recently is still being worked on.
STEP_ALIVE = dt.timedelta(seconds=45)


def claim_step(
    session: Session, build_id: int, step_name: str, attempt: int, worker: str
) -> BuildSpec:
    """Mark a step running for ``worker``; Conflict when it must not run (again)."""
    build = get_build(session, build_id, lock=True)
    if build.status in FINISHED:
        raise Conflict(f"build {build_id} is {build.status}")
    if attempt != build.attempt:
        raise Conflict(
            f"build {build_id} attempt {attempt} was taken over by attempt {build.attempt}"
        )
    step = _step(build, step_name)
    if step.status == "succeeded":
        raise Conflict(f"step {step_name} of build {build_id} already succeeded")
    alive = build.heartbeat_at is not None and utcnow() - build.heartbeat_at < STEP_ALIVE
    if step.status == "running" and alive and build.worker != worker:
        # A redelivered message while the first worker is still at it: never run twice.
        raise Conflict(f"step {step_name} of build {build_id} is running on {build.worker}")
    earlier = [s for s in build.steps if s.position < step.position and s.status != "succeeded"]
    if earlier:
        raise Conflict(f"step {step_name} of build {build_id} cannot run before {earlier[0].name}")
    now = utcnow()
    if build.status == "queued":
        build.status = "running"
        build.started_at = now
        build.environment.status = "building"
        effects.note_feedback(session, "build_running", build.id)
    build.worker = worker
    build.heartbeat_at = now
    step.status = "running"
    step.attempts += 1
    step.started_at = now
    step.error = None
    service = build.service
    repository = service.repository
    return BuildSpec(
        build_id=build.id,
        attempt=build.attempt,
        step=step_name,
        service_id=service.id,
        service=service.name,
        environment=build.environment.name,
        repository=service.repository_full_name,
        installation_id=repository.installation_id if repository else None,
        clone_url=repository.clone_url if repository else None,
        commit_sha=build.commit_sha,
        branch=build.branch,
        compose_path=service.compose_path or (repository.compose_path if repository else None),
        allow_privileged=service.allow_privileged,
        images=dict(build.images or {}),
    )


def finish_step(
    session: Session,
    build_id: int,
    step_name: str,
    attempt: int,
    *,
    succeeded: bool,
    error: str | None = None,
) -> Build:
    """Record a step's end; a failed step fails the build with an error a person can act on."""
    build = get_build(session, build_id, lock=True)
    if attempt != build.attempt:
        raise Conflict(f"build {build_id} attempt {attempt} is no longer current")
    step = _step(build, step_name)
    if succeeded and step.status == "succeeded":
        return build  # a repeated report (recording the deployment finishes its own step)
    if build.status in FINISHED:
        raise Conflict(f"build {build_id} is {build.status}")
    now = utcnow()
    step.finished_at = now
    build.heartbeat_at = now
    if succeeded:
        step.status = "succeeded"
        return build
    step.status = "failed"
    step.error = (error or "failed")[:4000]
    build.status = "failed"
    build.failed_step = step_name
    build.error = step.error
    build.finished_at = now
    build.environment.status = "failed"
    effects.note_feedback(session, "build_failed", build.id)
    for later in build.steps:
        if later.status == "pending":
            later.status = "skipped"
    return build


def heartbeat(session: Session, build_id: int, attempt: int) -> None:
    session.execute(
        update(Build)
        .where(Build.id == build_id, Build.attempt == attempt, Build.status == "running")
        .values(heartbeat_at=utcnow())
    )


def record_artifacts(
    session: Session, build_id: int, attempt: int, images: dict[str, Any], compose: str | None
) -> Build:
    """Store the pushed images (by digest) and the pinned compose file of a build."""
    build = get_build(session, build_id, lock=True)
    if attempt != build.attempt or build.status in FINISHED:
        raise Conflict(f"build {build_id} attempt {attempt} is no longer current")
    for name, image in images.items():
        digest = str(image.get("digest", ""))
        if not digest.startswith("sha256:") or not image.get("repository"):
            raise ValidationFailed(
                "every image needs a repository and a sha256 digest",
                details={"images": {name: ["repository and sha256 digest required"]}},
            )
    build.images = images
    build.compose = compose
    return build


def _order_key(build: Build) -> tuple[dt.datetime, int]:
    return (build.pushed_at or build.created_at, build.id)


def record_deployment(session: Session, service_id: int, build_id: int, actor: str) -> Deployment:
    """Make a finished build the desired state of its environment, unless a newer one is.

    The environment row is locked and its generation compared-and-swapped, so builds
    that finish in any order end with the newest commit deployed.
    """
    build = get_build(session, build_id, lock=True)
    if build.service_id != service_id:
        raise ValidationFailed(
            f"build {build_id} is not a build of service {service_id}",
            details={"build_id": ["belongs to another service"]},
        )
    if not build.images:
        raise Conflict(f"build {build_id} has no pushed images to deploy")
    if build.status in ("failed", "cancelled"):
        raise Conflict(f"build {build_id} is {build.status}")
    environment = session.get(Environment, build.environment_id, with_for_update=True)
    assert environment is not None
    existing = session.scalar(
        select(Deployment).where(
            Deployment.environment_id == environment.id, Deployment.build_id == build.id
        )
    )
    if existing is not None:
        _finish_build(build, "succeeded")
        return existing
    current = environment.current_deployment
    deployment = Deployment(environment_id=environment.id, build_id=build.id, status="pending")
    session.add(deployment)
    if current is not None and _order_key(current.build) > _order_key(build):
        deployment.status = "superseded"
        deployment.error = f"a newer build ({current.build.commit_sha[:7]}) is already deployed"
        _finish_build(build, "superseded")
        session.flush()
        return deployment
    seen = environment.generation
    session.flush()
    swapped = session.execute(
        update(Environment)
        .where(Environment.id == environment.id, Environment.generation == seen)
        .values(current_deployment_id=deployment.id, generation=seen + 1, status="deploying")
    )
    if swapped.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"environment {environment.name} changed meanwhile; retry")
    desired.bump(session, environment.host_id)
    _finish_build(build, "succeeded")
    audit.record(
        session,
        actor,
        "deployment.create",
        "deployment",
        deployment.id,
        environment=environment.name,
        build=build.id,
        commit=build.commit_sha,
    )
    session.flush()
    return deployment


def _finish_build(build: Build, status: str) -> None:
    """End a build whose last step (recording the deployment) just happened."""
    if build.status in FINISHED:
        return
    now = utcnow()
    build.status = status
    build.finished_at = now
    last = _step(build, PIPELINE_STEPS[-1])
    last.status = "succeeded"
    last.finished_at = now


def supersede_older(session: Session, build: Build) -> list[int]:
    """Cancel the unfinished older builds of the same environment; return their ids."""
    older = list(
        session.scalars(
            select(Build).where(
                Build.environment_id == build.environment_id,
                Build.id != build.id,
                Build.status.in_(("queued", "running")),
            )
        )
    )
    cancelled = []
    for other in older:
        if _order_key(other) < _order_key(build):
            other.status = "cancelled"
            other.error = f"superseded by build {build.id} of {build.commit_sha[:7]}"
            other.finished_at = utcnow()
            for step in other.steps:
                if step.status in ("pending", "running"):
                    step.status = "skipped" if step.status == "pending" else "failed"
            cancelled.append(other.id)
    return cancelled


def stale_builds(session: Session, older_than: dt.timedelta) -> list[Build]:
    """Running builds whose worker stopped sending heartbeats (killed, lost)."""
    cutoff = utcnow() - older_than
    return list(
        session.scalars(select(Build).where(Build.status == "running", Build.heartbeat_at < cutoff))
    )


def take_over(session: Session, build: Build) -> Build:
    """Start a build again from its first step as a new attempt (old messages are void)."""
    build.attempt += 1
    build.status = "queued"
    build.enqueued_at = None
    build.worker = None
    build.images = {}
    build.compose = None
    for step in build.steps:
        step.status = "pending"
        step.error = None
    return build


def deployments_of(session: Session, service_id: int) -> list[Deployment]:
    service = session.get(Service, service_id)
    if service is None or service.deleted_at is not None:
        raise NotFound(f"service {service_id} does not exist")
    return list(
        session.scalars(
            select(Deployment)
            .join(Environment, Deployment.environment_id == Environment.id)
            .where(Environment.service_id == service_id)
            .order_by(Deployment.id.desc())
        )
    )
