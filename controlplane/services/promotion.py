"""Promotion: what runs in one environment (staging) deployed to another of the same
service (production) as it is, without building again.

The target gets a new deployment of the source's current build: the same Build row, so
exactly its image digests and pinned compose file, recorded as a promotion (from which
environment, by whom, when) and audited. It goes through the one path from a build to a
deployment (:func:`deployments.deliver`), so an environment that requires approval holds it
like any other, and it is rolled back like any other deployment. On GitHub it is a
deployment of the same commit to the target's environment (:mod:`feedback`).

Refused: environments of different services, a source running nothing (or nothing that
has run healthy yet), a preview as target, a fork's code as source (untrusted code never
reaches production through a promotion), and a target on a host marked untrusted.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from contracts import envkinds
from controlplane.errors import Conflict, NotFound, NotPermitted, ValidationFailed
from controlplane.models import Deployment, Environment
from controlplane.services import audit, deployments
from controlplane.statuses import DeploymentStatus, EnvironmentStatus


def _refusal(source: Environment, target: Environment) -> None:
    """Raise what forbids promoting ``source``'s current deployment to ``target``."""
    if target.id == source.id:
        raise ValidationFailed(
            "an environment is not promoted to itself", details={"to": ["the source itself"]}
        )
    if target.service_id != source.service_id:
        raise ValidationFailed(
            f"{source.name} and {target.name} are environments of different services",
            details={"to": [f"not an environment of service {source.service.name}"]},
        )
    if target.kind == envkinds.PREVIEW:
        raise ValidationFailed(
            f"{target.name} is a preview: previews run their pull request's code only",
            details={"to": ["a preview is not a promotion's target"]},
        )
    current = source.current_deployment
    if source.from_fork or (current is not None and current.build.untrusted):
        raise NotPermitted(
            f"{source.name} runs a fork's code: untrusted code never reaches "
            f"{target.name} through a promotion"
        )
    if target.host.untrusted:
        raise Conflict(
            f"{target.name} is on host {target.host.name}, which is untrusted (it runs fork "
            "previews): nothing is promoted there"
        )
    for environment in (source, target):
        if environment.status == EnvironmentStatus.INACTIVE:
            raise Conflict(f"{environment.name} is torn down")
    if current is None:
        raise Conflict(f"{source.name} has nothing deployed to promote")
    if current.status != DeploymentStatus.ACTIVE:
        raise Conflict(
            f"deployment #{current.id} of {source.name} is {current.status}: "
            "promote what runs once its host's agent reports it healthy"
        )


def promote(
    session: Session, source_id: int, target_id: int, actor: str
) -> tuple[Environment, Deployment | None]:
    """Deploy the build ``source_id`` runs to ``target_id``; return the target and its new
    deployment, or None for it when a gate of the target (an approval) holds the build.
    Asking again while the target runs that build already changes nothing."""
    source = session.get(Environment, source_id)
    if source is None:
        raise NotFound(f"environment {source_id} does not exist")
    target = session.get(Environment, target_id, with_for_update=True)
    if target is None:
        raise ValidationFailed(
            f"environment {target_id} does not exist", details={"to": ["no such environment"]}
        )
    _refusal(source, target)
    current = source.current_deployment
    assert current is not None  # _refusal
    build = current.build
    running = target.current_deployment
    if running is not None and running.build_id == build.id:
        return target, running
    deployment = deployments.deliver(session, target, build, actor, promoted_from=source)
    session.refresh(target)  # deliver swapped its deployment with an UPDATE statement
    audit.record(
        session,
        actor,
        "environment.promote",
        "environment",
        target.id,
        source=source.name,
        build=build.id,
        commit=build.commit_sha,
        deployment=deployment.id if deployment is not None else None,
    )
    return target, deployment
