"""Deployment gates: what holds a finished build before it becomes an environment's
deployment, in this order: the commit's checks on GitHub (a service's ``deploy_when:
checks_passed``, see :mod:`~controlplane.services.checks`; its own environments but
previews), then a person's approval (an environment's ``approval_required``, see
:mod:`~controlplane.services.approvals`).

:func:`controlplane.services.deployments.deliver` is the one way a build becomes a
deployment: it asks :func:`first_gate` and either holds the build here or deploys it. A
held build is the environment's ``held_build_id``; the environment's status says which
gate (``awaiting_checks``, ``awaiting_approval``) and its ``status_reason`` why; a build
of that environment's own shows the gate as its status too. A build promoted from another
environment keeps its status (it ran there) and waits for the approval only.

This module knows no builds module: builds imports it.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.orm import Session

from controlplane.models import Build, Environment, utcnow
from controlplane.services import audit, effects
from controlplane.statuses import BuildStatus, DeploymentStatus, DeployWhen, EnvironmentStatus

CHECKS = BuildStatus.AWAITING_CHECKS
APPROVAL = BuildStatus.AWAITING_APPROVAL
# The gates in the order a build passes them; also the statuses of a held build.
HELD = (CHECKS, APPROVAL)
# A held build's failed_step when a check failed or did not pass in time.
CHECKS_STEP = "checks"


def first_gate(environment: Environment, build: Build, cleared: Collection[str] = ()) -> str | None:
    """The gate that holds ``build`` on its way to ``environment``, skipping those in
    ``cleared`` (already passed); None when it may deploy now."""
    service = environment.service
    if (
        CHECKS not in cleared
        and environment.kind != "preview"
        and build.environment_id == environment.id
        and service.deploy_when == DeployWhen.CHECKS_PASSED
    ):
        return CHECKS
    if APPROVAL not in cleared and environment.approval_required:
        return APPROVAL
    return None


def reason_for(environment: Environment, build: Build, gate: str) -> str:
    """What a person reads on a held environment: which build, what for, and how on."""
    if gate == CHECKS:
        return f"build {build.id} of {build.commit_sha[:7]} waits for the commit's checks on GitHub"
    return (
        f"build {build.id} of {build.commit_sha[:7]} waits for approval to deploy to "
        f"{environment.name}: `portside approve {environment.name}` or "
        f"POST /v1/environments/{environment.id}/approve with an admin token"
    )


def hold(session: Session, environment: Environment, build: Build, gate: str) -> None:
    """Hold ``build`` at ``gate`` for ``environment`` (an earlier held one is dropped by
    the caller first); GitHub is told after the commit."""
    if (environment.held_build_id, environment.status) == (build.id, gate):
        return  # held there already (a repeated report): its reason may say more now
    environment.held_build_id = build.id
    environment.status = gate
    environment.status_reason = reason_for(environment, build, gate)
    own = build.environment_id == environment.id
    if own:
        build.status = gate
    build.held_at = utcnow()
    audit.record(
        session,
        "control plane",
        "deployment.held",
        "build",
        build.id,
        environment=environment.name,
        gate=gate,
        commit=build.commit_sha,
    )
    if own:
        effects.note_feedback(session, "build_held", build.id)
    if gate == CHECKS:  # the checks may have passed already: not wait for beat's poll
        effects.write(session, effects.Kind.CHECK_GATES)


def note_reason(session: Session, environment: Environment, build: Build, reason: str) -> None:
    """A held build still waits, for something else now (a check that started): say so."""
    if environment.held_build_id == build.id and environment.status_reason != reason:
        environment.status_reason = reason
        if build.environment_id == environment.id:
            effects.note_feedback(session, "build_held", build.id)


def settle(environment: Environment, reason: str | None = None) -> None:
    """The environment holds nothing any more: its status is its deployment's again."""
    environment.held_build_id = None
    current = environment.current_deployment
    if current is None:
        environment.status = EnvironmentStatus.FAILED if reason else EnvironmentStatus.PENDING
    elif current.status == DeploymentStatus.ACTIVE:
        environment.status = EnvironmentStatus.RUNNING
    elif current.status == DeploymentStatus.PENDING:
        environment.status = EnvironmentStatus.DEPLOYING
    else:
        environment.status = EnvironmentStatus.FAILED
    environment.status_reason = reason


def release_hold(environment: Environment, build: Build) -> None:
    """``build`` goes (deployed, cancelled): the environment no longer holds it."""
    if environment.held_build_id == build.id:
        settle(environment)


def fail_held(session: Session, environment: Environment, build: Build, reason: str) -> None:
    """A check failed or did not pass in time: the build stays unused, with the reason on
    it, its environment and GitHub; the environment keeps running what it ran."""
    settle(environment, reason)
    if build.environment_id != environment.id:
        return
    now = utcnow()
    build.status = BuildStatus.FAILED
    build.failed_step = CHECKS_STEP
    build.error = reason
    build.finished_at = now
    audit.record(
        session,
        "control plane",
        "build.checks_failed",
        "build",
        build.id,
        environment=environment.name,
        reason=reason,
    )
    effects.note_feedback(session, "build_failed", build.id)
