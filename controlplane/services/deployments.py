"""From a finished build to a deployment: the one path a push's, a released gate's and
a promotion's deployment take, ordered by ancestry and compared-and-swapped."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from contracts.statuses import BuildStatus, DeploymentStatus
from controlplane.errors import Conflict, NotFound, ValidationFailed
from controlplane.models import Build, Deployment, Environment, Service, utcnow
from controlplane.services import ancestry, audit, effects, gates, generations
from controlplane.services.builds import cancel, finish_build, get_build
from controlplane.statuses import EnvironmentStatus


def record_deployment(
    session: Session, service_id: int, build_id: int, actor: str
) -> Deployment | None:
    """Make a finished build the desired state of its environment, unless a newer one is
    or a gate holds it (then None: see :func:`deliver`)."""
    build = get_build(session, build_id, lock=True)
    if build.service_id != service_id:
        raise ValidationFailed(
            f"build {build_id} is not a build of service {service_id}",
            details={"build_id": ["belongs to another service"]},
        )
    if not build.images:
        raise Conflict(f"build {build_id} has no pushed images to deploy")
    if build.status in (BuildStatus.FAILED, BuildStatus.CANCELLED):
        raise Conflict(f"build {build_id} is {build.status}")
    environment = session.get(Environment, build.environment_id, with_for_update=True)
    assert environment is not None
    return deliver(session, environment, build, actor)


def deliver(
    session: Session,
    environment: Environment,
    build: Build,
    actor: str,
    *,
    cleared: Collection[str] = (),
    promoted_from: Environment | None = None,
) -> Deployment | None:
    """Deploy ``build`` to ``environment`` (locked by the caller), or hold it at the first
    gate it has not ``cleared`` (:mod:`~controlplane.services.gates`) and return None. The
    one path from a build to a deployment: a push's, a released gate's, a promotion's.

    A build of another environment is a promotion (:mod:`~controlplane.services.promotion`,
    from ``promoted_from``, else the build's environment): recorded on the deployment,
    never superseded by what the environment runs (a person chose it just now; later
    pushes are ordered after it, see :func:`ancestry.of_deployment`), and made current
    again when that environment ran it before (a deployment row per environment and build).

    The environment's generation is compared-and-swapped, so builds that finish in any
    order end with the newest commit deployed: newest by ancestry as the push payloads
    tell it (:mod:`~controlplane.services.ancestry`; GitHub was asked already when the
    build started, see :func:`supersede_older`); a build held for the environment meanwhile
    counts as deployed.
    """
    existing = session.scalar(
        select(Deployment).where(
            Deployment.environment_id == environment.id, Deployment.build_id == build.id
        )
    )
    own = build.environment_id == environment.id
    source = promoted_from or (None if own else build.environment)
    if existing is not None and source is None:
        gates.release_hold(environment, build)
        finish_build(build, BuildStatus.SUCCEEDED)
        return existing
    current = environment.current_deployment
    held = environment.held_build if environment.held_build_id != build.id else None
    facts = ancestry.facts_for(session, environment.id)
    rivals = [(held, ancestry.of_build(held))] if held is not None else []
    if current is not None:
        rivals.append((current.build, ancestry.of_deployment(current)))
    this = ancestry.of_build(build)
    newer = (
        None  # a promotion is a person's choice made now: nothing there is newer
        if source is not None
        else next((rival for rival, at in rivals if ancestry.is_newer(at, this, facts)), None)
    )
    if newer is not None:
        deployment = Deployment(environment_id=environment.id, build_id=build.id)
        session.add(deployment)
        deployment.status = DeploymentStatus.SUPERSEDED
        deployment.error = f"a newer build ({newer.commit_sha[:7]}) is already deployed"
        gates.release_hold(environment, build)
        finish_build(build, BuildStatus.SUPERSEDED)
        build.error = deployment.error
        effects.note_feedback(session, "build_cancelled", build.id)
        session.flush()
        return deployment
    if held is not None:  # an older build waits at a gate: this one goes instead
        if held.environment_id == environment.id and held.status in gates.HELD:
            cancel(session, held, f"superseded by build {build.id} of {build.commit_sha[:7]}")
        environment.held_build_id = None
    gate = gates.first_gate(environment, build, cleared)
    if gate is not None:
        gates.hold(session, environment, build, gate)
        session.flush()
        return None
    deployment = existing or Deployment(environment_id=environment.id, build_id=build.id)
    deployment.status = DeploymentStatus.PENDING
    if source is not None:
        deployment.promoted_from_id = source.id
        deployment.promoted_by = actor
        deployment.promoted_at = utcnow()
    session.add(deployment)
    seen = environment.generation
    session.flush()
    swapped = session.execute(
        update(Environment)
        .where(Environment.id == environment.id, Environment.generation == seen)
        .values(
            current_deployment_id=deployment.id,
            generation=seen + 1,
            status=EnvironmentStatus.DEPLOYING,
            status_reason=None,
            held_build_id=None,
        )
    )
    if swapped.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"environment {environment.name} changed meanwhile; retry")
    generations.bump_environment(session, environment)
    finish_build(build, BuildStatus.SUCCEEDED)
    audit.record(
        session,
        actor,
        "deployment.create",
        "deployment",
        deployment.id,
        environment=environment.name,
        build=build.id,
        commit=build.commit_sha,
        promoted_from=source.name if source is not None else None,
    )
    session.flush()
    if source is not None:  # on GitHub, a deployment of its own (builds report theirs)
        effects.note_feedback(session, "deployment_promoted", deployment.id)
    return deployment


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
