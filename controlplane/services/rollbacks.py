"""Going back: an earlier successful deployment becomes the desired state again."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.errors import NotFound, ValidationFailed
from controlplane.models import Deployment, Environment
from controlplane.services import audit, generations
from controlplane.statuses import DeploymentStatus, EnvironmentStatus


def previous_active(
    session: Session, environment: Environment, failed: Deployment
) -> Deployment | None:
    """The deployment that served ``environment`` most recently before ``failed``."""
    return session.scalar(
        select(Deployment)
        .where(
            Deployment.environment_id == environment.id,
            Deployment.id != failed.id,
            Deployment.activated_at.is_not(None),
            Deployment.status.in_((DeploymentStatus.ACTIVE, DeploymentStatus.SUPERSEDED)),
        )
        .order_by(Deployment.activated_at.desc())
        .limit(1)
    )


def rollback(
    session: Session, environment_id: int, deployment_id: int | None, actor: str
) -> Deployment:
    """Make an earlier successful deployment the desired state again."""
    environment = session.get(Environment, environment_id, with_for_update=True)
    if environment is None:
        raise NotFound(f"environment {environment_id} does not exist")
    candidates = list(
        session.scalars(
            select(Deployment)
            .where(
                Deployment.environment_id == environment.id,
                Deployment.activated_at.is_not(None),
                Deployment.id != environment.current_deployment_id,
            )
            .order_by(Deployment.activated_at.desc())
        )
    )
    if deployment_id is not None:
        candidates = [d for d in candidates if d.id == deployment_id]
    if not candidates:
        raise ValidationFailed(
            "nothing to roll back to",
            details={"deployment_id": ["no earlier successful deployment of this environment"]},
        )
    target = candidates[0]
    target.status = DeploymentStatus.PENDING
    environment.current_deployment_id = target.id
    environment.status = EnvironmentStatus.DEPLOYING
    environment.generation += 1
    generations.bump_environment(session, environment)
    audit.record(
        session, actor, "environment.rollback", "environment", environment.id, deployment=target.id
    )
    return target
