"""``/v1/environments``: production, staging and preview environments: rolling back,
redeploying, approving and tearing one down by hand."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from controlplane import schemas
from controlplane.api.auth import actor, require
from controlplane.api.requestdb import session
from controlplane.api.shaping import paged, row_fields
from controlplane.models import Environment
from controlplane.services import approvals, envactions, listings, rollbacks

blueprint = Blueprint(
    "environments", __name__, url_prefix="/v1/environments", description="Environments"
)


@blueprint.get("")
@require("read")
@blueprint.arguments(schemas.EnvironmentQuerySchema, location="query")
@blueprint.response(200, schemas.EnvironmentSchema(many=True))
@blueprint.paginate()
def list_environments(query: dict[str, Any], pagination_parameters: Any) -> list[Any]:
    statement = listings.environments(service_id=query.get("service"), kind=query.get("kind"))
    return paged(statement, pagination_parameters)


@blueprint.get("/<int:environment_id>")
@require("read")
@blueprint.response(200, schemas.EnvironmentSchema)
def get_environment(environment_id: int) -> Environment:
    return listings.get_environment(session(), environment_id)


@blueprint.post("/<int:environment_id>/rollback")
@require("admin")
@blueprint.arguments(schemas.RollbackSchema)
@blueprint.response(202, schemas.CurrentDeploymentSchema)
def rollback_environment(data: dict[str, Any], environment_id: int) -> Any:
    """Make an earlier successful deployment the desired state again (no rebuild)."""
    db = session()
    deployment = rollbacks.rollback(db, environment_id, data["deployment_id"], actor())
    db.commit()
    return deployment


@blueprint.delete("/<int:environment_id>")
@require("admin")
@blueprint.response(204)
def delete_environment(environment_id: int) -> None:
    """Tear down a preview or a staging environment by hand (production environments go
    with their service; a staging environment's images stay, production may run them)."""
    db = session()
    envactions.remove(db, environment_id, actor())
    db.commit()


@blueprint.post("/<int:environment_id>/redeploy")
@require("admin")
@blueprint.response(202, schemas.BuildSchema)
def redeploy_environment(environment_id: int) -> Any:
    """Build the environment's current commit again and deploy it."""
    db = session()
    build = envactions.redeploy(db, environment_id, actor())
    db.commit()
    return build


@blueprint.patch("/<int:environment_id>")
@require("admin")
@blueprint.arguments(schemas.EnvironmentPatchSchema)
@blueprint.response(200, schemas.EnvironmentSchema)
def update_environment(changes: dict[str, Any], environment_id: int) -> Any:
    """Change an environment's settings: ``approval_required`` holds each deployment to it
    until a person approves it (turning it off releases one that waits)."""
    db = session()
    approval = approvals.update_environment(db, environment_id, changes, actor())
    db.commit()
    return approval.environment


@blueprint.post("/<int:environment_id>/approve")
@require("admin")
@blueprint.arguments(schemas.EnvironmentApproveSchema)
@blueprint.response(200, schemas.ApprovalSchema)
@blueprint.alt_response(
    409, schema=schemas.ApiErrorSchema, description="nothing waits, or not that commit"
)
def approve_environment(data: dict[str, Any], environment_id: int) -> Any:
    """Release the deployment waiting for approval in the environment (``sha``, when given,
    must be its commit), or build and run the fork commit a person reviewed (``sha``,
    required then: it must still be the head; the next push waits for a new approval)."""
    db = session()
    approval = approvals.approve(db, environment_id, actor(), data["sha"])
    db.commit()
    return row_fields(
        approval.environment,
        schemas.EnvironmentSchema,
        build_id=approval.build.id if approval.build else None,
        deployment_id=approval.deployment.id if approval.deployment else None,
    )


@blueprint.post("/<int:environment_id>/approve-secrets")
@require("admin")
@blueprint.arguments(schemas.ApproveSchema)
@blueprint.response(200, schemas.EnvironmentSchema)
@blueprint.alt_response(409, schema=schemas.ApiErrorSchema, description="not the head")
def approve_secrets(data: dict[str, Any], environment_id: int) -> Any:
    """Let the fork commit a person reviewed (``sha``, required: the head) receive the
    service's secrets (a decision per commit, like the approval to run it)."""
    db = session()
    environment = envactions.approve_secrets(db, environment_id, actor(), data["sha"])
    db.commit()
    return environment
