"""Approvals: a person lets something wait no longer. One verb for two things:

- an environment with ``approval_required`` holds each deployment to it (a push's build,
  after its checks if the service waits for those, or a promotion) in
  ``awaiting_approval`` until a person approves it: the held build then deploys
  (:func:`controlplane.services.deployments.deliver`, the gates before it cleared);
- a preview of a pull request from a fork builds nothing until a person approved its
  head commit (:func:`controlplane.services.envactions.approve`, which needs that ``sha``).

The API, the CLI, the dashboard and PR comments (``/portside approve``) all call
:func:`approve`; each approval is audited with its actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from controlplane.errors import Conflict, NotFound, ValidationFailed
from controlplane.models import Build, Deployment, Environment
from controlplane.services import audit, deployments, envactions, gates
from controlplane.statuses import EnvironmentStatus


@dataclass(frozen=True, slots=True)
class Approval:
    """What an approval did: the build it started (a fork preview's: to be queued after
    the commit) or the deployment it released (a held build's), never both."""

    environment: Environment
    build: Build | None = None
    deployment: Deployment | None = None


def _environment(session: Session, environment_id: int) -> Environment:
    environment = session.get(Environment, environment_id, with_for_update=True)
    if environment is None:
        raise NotFound(f"environment {environment_id} does not exist")
    return environment


def approve(session: Session, environment_id: int, actor: str, sha: str | None = None) -> Approval:
    """``actor`` approves what waits in the environment: the deployment held for approval
    (``sha``, when given, must be its commit: what the person reviewed), else a fork
    preview's head commit ``sha``. Conflict when nothing waits for an approval there."""
    environment = _environment(session, environment_id)
    held = environment.held_build
    # Which gate holds it: its own build says (a rollback meanwhile moved the
    # environment's status on), a promoted one only the environment.
    own = held is not None and held.environment_id == environment.id
    gate = held.status if held is not None and own else environment.status
    if held is not None and gate == gates.APPROVAL:
        if sha is not None and sha != held.commit_sha:
            raise Conflict(
                f"{environment.name} waits to deploy {held.commit_sha[:7]}, not {sha[:7]}",
                details={"sha": [f"the waiting deployment is of {held.commit_sha}"]},
            )
        audit.record(
            session,
            actor,
            "environment.approve",
            "environment",
            environment.id,
            sha=held.commit_sha,
            build=held.id,
        )
        deployment = deployments.deliver(session, environment, held, actor, cleared=gates.HELD)
        return Approval(environment, deployment=deployment)
    if held is not None and gate == gates.CHECKS:
        raise Conflict(
            f"{environment.name} waits for the checks of {held.commit_sha[:7]}, not for an "
            "approval",
            details={"reason": [environment.status_reason or ""]},
        )
    if environment.kind == "preview" and environment.from_fork:
        if sha is None:
            raise ValidationFailed(  # as the API reports a field of the request's body
                "name the fork commit you reviewed",
                details={"json": {"sha": ["required to approve a fork's commit"]}},
            )
        environment, build = envactions.approve(session, environment_id, actor, sha)
        return Approval(environment, build=build)
    raise Conflict(
        f"nothing in {environment.name} waits for an approval (a held deployment or, in a "
        "preview of a pull request from a fork, its head commit)"
    )


def update_environment(
    session: Session, environment_id: int, changes: dict[str, Any], actor: str
) -> Approval:
    """Change an environment's settings (``approval_required``). Turning approvals off
    releases a deployment that waited for one (the change is the approval, audited)."""
    environment = _environment(session, environment_id)
    if environment.status == EnvironmentStatus.INACTIVE:
        raise Conflict(f"environment {environment.name} is closed")
    deployment = None
    if "approval_required" in changes:
        required = bool(changes["approval_required"])
        if required != environment.approval_required:
            environment.approval_required = required
            audit.record(
                session,
                actor,
                "environment.update",
                "environment",
                environment.id,
                approval_required=required,
            )
        held = environment.held_build
        if not required and held is not None and environment.status == gates.APPROVAL:
            deployment = deployments.deliver(session, environment, held, actor, cleared=gates.HELD)
    return Approval(environment, deployment=deployment)
