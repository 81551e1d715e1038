"""A build's lifecycle in the control plane: looked up, a step recorded as ended, finished,
cancelled when a newer commit makes it pointless, and taken over when its worker is lost.

The step protocol a build worker speaks is :mod:`~controlplane.services.stepclaims`; its
uploads are checked in :mod:`~controlplane.services.artifacts`, its deployment made in
:mod:`~controlplane.services.deployments`, and when it starts is chosen by
:mod:`~controlplane.services.dispatch`.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.statuses import BuildStatus, StepStatus
from contracts.steps import LAST_STEP
from controlplane.errors import Conflict, NotFound
from controlplane.models import Build, BuildStep, utcnow
from controlplane.services import ancestry, dispatch, effects, gates, stops
from controlplane.statuses import EnvironmentStatus

log = logging.getLogger(__name__)

FINISHED = (
    BuildStatus.SUCCEEDED,
    BuildStatus.FAILED,
    BuildStatus.CANCELLED,
    BuildStatus.SUPERSEDED,
)


def get_build(session: Session, build_id: int, *, lock: bool = False) -> Build:
    build = session.get(Build, build_id, with_for_update=lock)
    if build is None:
        raise NotFound(f"build {build_id} does not exist")
    return build


def step_of(build: Build, name: str) -> BuildStep:
    for step in build.steps:
        if step.name == name:
            return step
    raise NotFound(f"build {build.id} has no step {name!r}")


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
    step = step_of(build, step_name)
    if succeeded and step.status == StepStatus.SUCCEEDED:
        return build  # a repeated report (recording the deployment finishes its own step)
    if build.status in FINISHED:
        raise Conflict(f"build {build_id} is {build.status}")
    now = utcnow()
    step.finished_at = now
    build.heartbeat_at = now
    if succeeded:
        step.status = StepStatus.SUCCEEDED
        return build
    step.status = StepStatus.FAILED
    step.error = (error or "failed")[:4000]
    build.status = BuildStatus.FAILED
    build.failed_step = step_name
    build.error = step.error
    build.finished_at = now
    build.environment.status = EnvironmentStatus.FAILED
    effects.note_feedback(session, "build_failed", build.id)
    for later in build.steps:
        if later.status == StepStatus.PENDING:
            later.status = StepStatus.SKIPPED
    return build


def finish_build(build: Build, status: BuildStatus) -> None:
    """End a build whose last step (recording the deployment) just happened."""
    if build.status in FINISHED:
        return
    now = utcnow()
    build.status = status
    build.finished_at = now
    last = step_of(build, LAST_STEP)
    last.status = StepStatus.SUCCEEDED
    last.finished_at = now


def supersede_older(
    session: Session, build: Build, compare: ancestry.Compare | None = None
) -> list[int]:
    """Cancel what ``build`` makes pointless: the unfinished builds of the environment
    whose commit it is newer than, or ``build`` itself when an unfinished build or the
    deployed one is newer (its commit an ancestor of theirs). Newer by
    :func:`ancestry.is_newer`, asking GitHub through ``compare`` when the push payloads
    cannot tell. Return the cancelled builds' ids; the workers running them are told to
    stop once this transaction commits (:mod:`~controlplane.services.stops`).

    GitHub is asked before any row is locked; the builds are then locked in id order
    (as every caller locks them) and only those still unfinished are cancelled.
    """
    if build.status not in (BuildStatus.QUEUED, BuildStatus.RUNNING):
        return []  # cancelled meanwhile by a newer build's own start
    unfinished = (Build.status.in_((BuildStatus.QUEUED, BuildStatus.RUNNING, *gates.HELD)),)
    rivals = [
        (rival, ancestry.of_build(rival))
        for rival in session.scalars(
            select(Build).where(
                Build.environment_id == build.environment_id, Build.id != build.id, *unfinished
            )
        )
    ]
    current = build.environment.current_deployment
    if current is not None and current.build_id != build.id:
        rivals.append((current.build, ancestry.of_deployment(current)))  # maybe a promotion
    facts = ancestry.facts_for(session, build.environment_id)
    this = ancestry.of_build(build)
    newer = next(
        (r for r, at in rivals if not ancestry.is_newer(this, at, facts, compare)),
        None,
    )
    doomed = {build.id: newer} if newer is not None else {r.id: build for r, _ in rivals}
    locked = session.scalars(
        select(Build)
        .where(Build.id.in_(doomed), *unfinished)
        .order_by(Build.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    for loser in locked:
        winner = doomed[loser.id]
        cancel(session, loser, f"superseded by build {winner.id} of {winner.commit_sha[:7]}")
    return [loser.id for loser in locked]


def cancel(session: Session, build: Build, reason: str) -> None:
    """Cancel an unfinished build; a worker running it is told to stop after the commit."""
    if build.status == BuildStatus.RUNNING:
        stops.note_stop(session, build.id, build.attempt, reason)
    gates.release_hold(build.environment, build)
    build.status = BuildStatus.CANCELLED
    build.error = reason
    build.finished_at = utcnow()
    effects.note_feedback(session, "build_cancelled", build.id)
    for step in build.steps:
        if step.status in (StepStatus.PENDING, StepStatus.RUNNING):
            running = step.status == StepStatus.RUNNING
            step.status = StepStatus.FAILED if running else StepStatus.SKIPPED


def stale_builds(session: Session, older_than: dt.timedelta) -> list[Build]:
    """Running builds whose worker stopped sending heartbeats (killed, lost)."""
    cutoff = utcnow() - older_than
    lost = select(Build).where(Build.status == BuildStatus.RUNNING, Build.heartbeat_at < cutoff)
    return list(session.scalars(lost))


def take_over(session: Session, build: Build) -> Build:
    """Queue a build again from its first step as a new attempt (old messages are void);
    the dispatchers send it when its turn comes.

    The step whose worker was lost is kept in ``failed_step`` (and why in ``error``): when
    the next attempt loses its worker in that same step too, the step is what kills its
    workers (a crafted input, a build too large for them), so the build fails instead of
    being taken over again and again.
    """
    lost = next((s for s in build.steps if s.status == StepStatus.RUNNING), None) or next(
        (s for s in build.steps if s.status != StepStatus.SUCCEEDED), None
    )
    lost_name = lost.name if lost is not None else None
    if lost_name is not None and build.attempt > 1 and build.failed_step == lost_name:
        _fail_lost_twice(session, build, lost_name)
        return build
    build.failed_step = lost_name
    build.error = (
        f"attempt {build.attempt} lost its worker {build.worker or '(unknown)'} "
        f"during step {lost_name}; taken over"
    )
    build.attempt += 1
    build.status = BuildStatus.QUEUED
    build.worker = None
    build.worker_token_id = None
    build.images = {}
    build.compose = None
    for step in build.steps:
        step.status = StepStatus.PENDING
        step.error = None
    dispatch.wake_dispatchers(session)
    return build


def _fail_lost_twice(session: Session, build: Build, step_name: str) -> None:
    now = utcnow()
    error = (
        f"step {step_name} lost its worker in attempts {build.attempt - 1} and {build.attempt}: "
        "the build fails rather than being taken over again"
    )
    log.warning("build %s: %s", build.id, error)
    build.status = BuildStatus.FAILED
    build.error = error
    build.failed_step = step_name
    build.finished_at = now
    build.worker_token_id = None
    build.environment.status = EnvironmentStatus.FAILED
    for step in build.steps:
        if step.name == step_name:
            step.status, step.error, step.finished_at = StepStatus.FAILED, error, now
        elif step.status in (StepStatus.PENDING, StepStatus.RUNNING):
            step.status = StepStatus.SKIPPED
    effects.note_feedback(session, "build_failed", build.id)
