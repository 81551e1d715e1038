"""The step protocol: build workers claim steps, report them (one exchange per step
boundary), send heartbeats, and record artifacts and deployments through it; everything
here is idempotent.

A step is keyed by (build, attempt, step): a redelivered message of a finished step, or
of an attempt that was taken over after its worker died, is refused with a Conflict and
the worker drops it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from contracts.statuses import BuildStatus, StepStatus
from contracts.steps import LAST_STEP, STEPS, Step
from controlplane.errors import Conflict, NotPermitted
from controlplane.models import ApiToken, Build, Deployment, utcnow
from controlplane.services import buildcache, deployments, dispatch, effects
from controlplane.services.artifacts import record_artifacts
from controlplane.services.builds import FINISHED, finish_step, get_build, step_of
from controlplane.statuses import BuildLane, EnvironmentStatus


@dataclass(frozen=True, slots=True)
class ClaimedStep:
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
    # Cloned from a git URL, with its own credentials (POST .../git-token), not GitHub's.
    git_remote: bool
    commit_sha: str
    branch: str
    compose_path: str | None
    compose_allow: list[str]
    images: dict[str, Any] = field(default_factory=dict)
    # A fork's code: no network, cache or branch tag, images under pr_number's own name.
    untrusted: bool = False
    pr_number: int | None = None
    # Per image key, pushed images to take layers from (services.buildcache); none for forks.
    cache_from: dict[str, list[str]] = field(default_factory=dict)


# A step whose worker sent a heartbeat this recently is still being worked on.
STEP_ALIVE = dt.timedelta(seconds=45)


def claim_step(
    session: Session,
    build_id: int,
    step_name: str,
    attempt: int,
    worker: str,
    *,
    token: ApiToken | None = None,
) -> ClaimedStep:
    """Mark a step running for ``worker``, held by the API token ``token`` (the only one
    then answered this build's credentials); NotPermitted when the build is not of the
    token's lane, Conflict when the step must not run (again)."""
    build = get_build(session, build_id, lock=True)
    if token is not None and token.build_lane not in (BuildLane.ALL, _lane(build)):
        raise NotPermitted(
            f"this token claims {token.build_lane} builds only; build {build_id} is {_lane(build)}"
        )
    if build.status in FINISHED:
        raise Conflict(f"build {build_id} is {build.status}")
    if attempt != build.attempt:
        raise Conflict(
            f"build {build_id} attempt {attempt} was taken over by attempt {build.attempt}"
        )
    step = step_of(build, step_name)
    if step.status == StepStatus.SUCCEEDED:
        raise Conflict(f"step {step_name} of build {build_id} already succeeded")
    alive = build.heartbeat_at is not None and utcnow() - build.heartbeat_at < STEP_ALIVE
    token_id = token.id if token is not None else None
    holder = (build.worker, build.worker_token_id)
    if step.status == StepStatus.RUNNING and alive and holder != (worker, token_id):
        # A redelivered message while the first worker is still at it: never run twice.
        # The worker's name is its own word; the token decides who holds the step.
        raise Conflict(f"step {step_name} of build {build_id} is running on {build.worker}")
    earlier = [
        s for s in build.steps if s.position < step.position and s.status != StepStatus.SUCCEEDED
    ]
    if earlier:
        raise Conflict(f"step {step_name} of build {build_id} cannot run before {earlier[0].name}")
    now = utcnow()
    if build.status == BuildStatus.QUEUED:
        build.status = BuildStatus.RUNNING
        build.started_at = now
        build.environment.status = EnvironmentStatus.BUILDING
        dispatch.wake_dispatchers(session)  # its place in the shared queue is free again
    effects.note_feedback(session, "build_running", build.id)  # the Check Run names the step
    build.worker = worker
    build.worker_token_id = token_id
    build.heartbeat_at = now
    step.status = StepStatus.RUNNING
    step.attempts += 1
    step.started_at = now
    step.error = None
    service = build.service
    repository = service.repository
    return ClaimedStep(
        build_id=build.id,
        attempt=build.attempt,
        step=step_name,
        service_id=service.id,
        service=service.name,
        environment=build.environment.name,
        repository=service.repository_full_name,
        installation_id=repository.installation_id if repository else None,
        clone_url=service.git_url or (repository.clone_url if repository else None),
        git_remote=service.git_url is not None,
        commit_sha=build.commit_sha,
        branch=build.branch,
        compose_path=service.compose_path or (repository.compose_path if repository else None),
        compose_allow=[] if build.untrusted else [str(key) for key in service.compose_allow],
        images=dict(build.images or {}),
        untrusted=build.untrusted,
        pr_number=build.environment.pr_number,
        cache_from=buildcache.cache_refs(session, build) if step_name == "build" else {},
    )


def _lane(build: Build) -> str:
    return BuildLane.UNTRUSTED if build.untrusted else BuildLane.TRUSTED


def held_build(session: Session, build_id: int, token_id: int) -> Build:
    """The build whose running step the token ``token_id`` claimed; NotPermitted otherwise, so
    a worker token reaches the credentials of the builds it works on and no others."""
    build = get_build(session, build_id)
    holding = (
        build.status == BuildStatus.RUNNING
        and build.worker_token_id == token_id
        and any(step.status == StepStatus.RUNNING for step in build.steps)
    )
    if not holding:
        raise NotPermitted(f"this token does not hold a running step of build {build_id}")
    return build


def check_holder(session: Session, build_id: int, attempt: int, token_id: int | None) -> None:
    """NotPermitted unless ``token_id`` claimed the build's current ``attempt``: another worker
    token (one running forks' code among them) may neither report its steps, failing it,
    nor keep it alive. An attempt no longer current is the callee's Conflict."""
    build = get_build(session, build_id)
    if build.attempt == attempt and build.worker_token_id != token_id:
        raise NotPermitted(f"this token does not hold build {build_id}")


@dataclass(frozen=True, slots=True)
class StepEnded:
    """A reported step: the build, the deployment its last step made (None: held at a gate,
    or another step), and the next step when the worker claimed it in the same exchange."""

    build: Build
    deployment: Deployment | None = None
    next: ClaimedStep | None = None


def end_step(
    session: Session,
    build_id: int,
    step_name: str,
    attempt: int,
    *,
    token: ApiToken,
    succeeded: bool,
    error: str | None = None,
    worker: str | None = None,
    artifacts: Mapping[str, Any] | None = None,
    registry: str,
    actor: str,
) -> StepEnded:
    """One step boundary, one exchange: record the step's own result (upload_compose's
    ``artifacts``; record_deployment deploys the build), end it, and claim the next step
    for ``worker`` when it names itself. ComposeRefusedError as
    :func:`~controlplane.services.artifacts.record_artifacts`."""
    check_holder(session, build_id, attempt, token.id)
    deployment = None
    if succeeded and step_name == Step.UPLOAD_COMPOSE and artifacts is not None:
        record_artifacts(
            session,
            build_id,
            attempt,
            artifacts["images"],
            artifacts["compose"],
            registry=registry,
            routed=artifacts["routed_service"],
        )
    if succeeded and step_name == LAST_STEP:
        deployment = _deploy_step(session, build_id, attempt, actor)
    build = finish_step(session, build_id, step_name, attempt, succeeded=succeeded, error=error)
    following = next((step.next for step in STEPS if step == step_name), None)
    if worker is None or following is None or build.status != BuildStatus.RUNNING:
        return StepEnded(build, deployment)
    return StepEnded(
        build, deployment, claim_step(session, build_id, following, attempt, worker, token=token)
    )


def _deploy_step(session: Session, build_id: int, attempt: int, actor: str) -> Deployment | None:
    """The last step's own work: deploy the build, or hold it at a gate (None). A build no
    longer running was deployed or held by an earlier report (an older worker records
    the deployment before it finishes the step)."""
    build = get_build(session, build_id, lock=True)
    if attempt != build.attempt:
        raise Conflict(f"build {build_id} attempt {attempt} is no longer current")
    if build.status != BuildStatus.RUNNING:
        return None
    return deployments.record_deployment(session, build.service_id, build_id, actor)


def heartbeat(session: Session, build_id: int, attempt: int) -> None:
    """Note that the worker is at it; Conflict when it must stop: the build was cancelled
    (superseded) or this attempt taken over (the worker's backstop for a stop signal)."""
    beat = session.execute(
        update(Build)
        .where(Build.id == build_id, Build.attempt == attempt, Build.status == BuildStatus.RUNNING)
        .values(heartbeat_at=utcnow())
    )
    if beat.rowcount == 1:  # type: ignore[attr-defined]
        return
    build = get_build(session, build_id)
    if build.status == BuildStatus.CANCELLED:
        raise Conflict(f"build {build_id} was cancelled: {build.error}")
    if build.attempt != attempt:
        raise Conflict(f"build {build_id} attempt {attempt} was taken over")
