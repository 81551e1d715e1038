"""Staging environments and promotion: ``POST /v1/services/<id>/environments`` and
``POST /v1/environments/<id>/promote`` (:mod:`controlplane.services.staging`,
:mod:`controlplane.services.promotion`); ``DELETE /v1/environments/<id>`` tears a staging
environment down as it does a preview."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from controlplane import schemas
from controlplane.api.auth import actor, require
from controlplane.api.requestdb import session
from controlplane.api.shaping import row_fields
from controlplane.services import promotion, staging

blueprint = Blueprint(
    "stages",
    __name__,
    url_prefix="/v1",
    description="Staging environments and promotion between environments",
)


class EnvironmentCreateSchema(Schema):
    name = fields.String(
        required=True,
        metadata={
            "description": "the environment's kind, such as staging: 1-16 lower-case letters, "
            "digits and hyphens; it is named <service>-<name>"
        },
    )
    branch = fields.String(required=True, metadata={"description": "the branch it tracks"})


class PromoteSchema(Schema):
    to = fields.Integer(required=True, metadata={"description": "the target environment's id"})


class PromotionSchema(schemas.EnvironmentSchema):
    deployment_id = fields.Integer(
        allow_none=True,
        metadata={"description": "the target's new deployment; null while an approval holds it"},
    )


@blueprint.post("/services/<int:service_id>/environments")
@require("admin")
@blueprint.arguments(EnvironmentCreateSchema)
@blueprint.response(201, schemas.EnvironmentSchema)
@blueprint.alt_response(409, schema=schemas.ApiErrorSchema, description="the name is taken")
def create_environment(data: dict[str, Any], service_id: int) -> Any:
    """An environment of the service besides production, of kind ``name``, built and
    deployed from each push to ``branch``; reached at ``<name>.<service domain>``."""
    db = session()
    zone = current_app.extensions["portside.settings"].preview_domain
    environment = staging.create_environment(
        db, service_id, data["name"], data["branch"], actor(), zone=zone
    )
    db.commit()
    return environment


@blueprint.post("/environments/<int:environment_id>/promote")
@require("admin")
@blueprint.arguments(PromoteSchema)
@blueprint.response(202, PromotionSchema)
@blueprint.alt_response(403, schema=schemas.ApiErrorSchema, description="a fork's code")
@blueprint.alt_response(409, schema=schemas.ApiErrorSchema, description="nothing to promote")
@blueprint.alt_response(422, schema=schemas.ApiErrorSchema, description="not a valid target")
def promote_environment(data: dict[str, Any], environment_id: int) -> Any:
    """Deploy what this environment runs (the same build: its image digests and compose
    file) to the environment ``to`` of the same service, without building again; audited,
    shown on GitHub as a deployment of that commit, rolled back like any deployment."""
    db = session()
    target, deployment = promotion.promote(db, environment_id, data["to"], actor())
    db.commit()
    return row_fields(
        target, schemas.EnvironmentSchema, deployment_id=deployment.id if deployment else None
    )
