"""Environments of a service besides production and its previews (``staging`` tracking
``develop``, say): each tracks a branch of its own, which a push builds and deploys into
it as production's branch does into production (:mod:`~controlplane.services.pushes`).

One build per environment: a staging environment tracking production's own branch
builds each push once for itself, beside production's build (images are cached, and
each environment's builds keep their own order and history). What ran in staging reaches
production without building again through a promotion
(:mod:`~controlplane.services.promotion`).

The environment is named ``<service>-<kind>`` and reached at ``<kind>.<service
domain>``, or ``<service>-<kind>.<PORTSIDE_PREVIEW_DOMAIN>`` without one, the way
previews are; it runs on the service's host. Deleting it tears it down as a preview is,
except that its images stay: they are in the service's own repository, where production
may run them.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts import envkinds
from controlplane.errors import Conflict, ValidationFailed
from controlplane.models import Environment, Service, utcnow
from controlplane.services import audit, previews
from controlplane.services.catalog import get_service
from controlplane.services.servicerules import valid_branch
from controlplane.statuses import EnvironmentStatus


def environment_name(service: Service, kind: str) -> str:
    return f"{service.name}-{kind}"


def create_environment(
    session: Session, service_id: int, kind: str, branch: str, actor: str, *, zone: str
) -> Environment:
    """A new environment of ``kind`` tracking ``branch``; one deleted before of the same
    kind comes back tracking ``branch``. Its first build is the next push to the branch,
    or the backstop's build of the branch's head (:func:`backstop.reconcile_branches`)."""
    service = get_service(session, service_id)
    kind, branch = kind.strip().lower(), branch.strip()
    errors: dict[str, list[str]] = {}
    if refusal := envkinds.refusal(kind):
        errors["name"] = [refusal]
    if not valid_branch(branch):
        errors["branch"] = ["not a valid branch name"]
    if errors:
        raise ValidationFailed("the environment has invalid fields", details=errors)
    name = environment_name(service, kind)
    environment = session.scalar(select(Environment).where(Environment.name == name))
    if environment is not None and (
        environment.service_id != service.id or environment.status != EnvironmentStatus.INACTIVE
    ):
        raise Conflict(f"an environment named {name!r} exists")
    if environment is None:
        environment = Environment(
            service_id=service.id, name=name, kind=kind, status=EnvironmentStatus.PENDING
        )
        session.add(environment)
    environment.host_id = service.host_id
    environment.branch = branch
    environment.domain = previews.subdomain(service, kind, zone)
    environment.status = EnvironmentStatus.PENDING
    environment.status_reason = None
    environment.closed_at = environment.closed_by = environment.closed_reason = None
    environment.last_activity_at = utcnow()
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:  # created meanwhile by another request
        raise Conflict(f"an environment named {name!r} exists") from None
    audit.record(
        session,
        actor,
        "environment.create",
        "environment",
        environment.id,
        kind=kind,
        branch=branch,
    )
    return environment


def delete_environment(session: Session, environment: Environment, actor: str) -> None:
    """Tear down an environment made by :func:`create_environment` (its images stay)."""
    if environment.kind in (envkinds.PRODUCTION, envkinds.PREVIEW):
        raise Conflict(f"{environment.name} is a {environment.kind} environment, not a staging one")
    previews.teardown(session, environment, actor, "removed through the API", keep_images=True)
