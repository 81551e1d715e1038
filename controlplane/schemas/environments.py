"""Environments and their deployments: listing, changing, approving, rolling back."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import Schema, fields, validate
from sqlalchemy.orm import object_session

from contracts import envkinds
from controlplane.schemas.builds import BuildImagesField
from controlplane.services import pending


class PromotedSchema(Schema):
    """A deployment's promotion, if it is one (another environment's build, as it is)."""

    promoted_from = fields.String(
        attribute="promoted_from.name",
        allow_none=True,
        metadata={"description": "the environment it was promoted from; null if built here"},
    )
    promoted_by = fields.String(allow_none=True)
    promoted_at = fields.DateTime(allow_none=True)


class DeploymentSchema(PromotedSchema):
    id = fields.Integer()
    environment_id = fields.Integer()
    environment = fields.String(attribute="environment.name")
    build_id = fields.Integer()
    commit_sha = fields.String(attribute="build.commit_sha")
    status = fields.String()
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    activated_at = fields.DateTime(allow_none=True)
    images = BuildImagesField(of="build", metadata={"description": "what it runs, by digest"})


class CurrentDeploymentSchema(PromotedSchema):
    id = fields.Integer()
    build_id = fields.Integer()
    commit_sha = fields.String(attribute="build.commit_sha")
    status = fields.String()
    activated_at = fields.DateTime(allow_none=True)
    images = BuildImagesField(of="build", metadata={"description": "what it runs, by digest"})


class EnvironmentQuerySchema(Schema):
    service = fields.Integer()
    kind = fields.String(
        validate=validate.Regexp(rf"^{envkinds.KIND_RE.pattern}$"),
        metadata={"description": "production, preview, or another such as staging"},
    )


class EnvironmentSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    kind = fields.String()
    status = fields.String()
    service_id = fields.Integer()
    service = fields.String(attribute="service.name")
    host = fields.String(attribute="host.name")
    branch = fields.String()
    head_sha = fields.String(allow_none=True)
    pr_number = fields.Integer(allow_none=True)
    from_fork = fields.Boolean()
    status_reason = fields.String(
        allow_none=True, metadata={"description": "why it is refused or awaiting approval"}
    )
    pending_reason = fields.Method(
        "_pending_reason",
        allow_none=True,
        metadata={
            "description": "what a pending, building, deploying, awaiting_checks or "
            "awaiting_approval environment waits for (checks, approval, a build, its "
            "host's agent), or null"
        },
    )
    approved_sha = fields.String(
        allow_none=True, metadata={"description": "the fork commit approved to build and run"}
    )
    secrets_approved_sha = fields.String(
        allow_none=True, metadata={"description": "the fork commit approved to receive secrets"}
    )
    approval_required = fields.Boolean(
        metadata={"description": "each deployment to it waits for a person's approval"}
    )
    held_build_id = fields.Integer(
        allow_none=True,
        metadata={"description": "the build waiting at a gate (checks, approval) to deploy here"},
    )
    domain = fields.String(allow_none=True)
    address = fields.String(allow_none=True)
    generation = fields.Integer()
    current_deployment = fields.Nested(CurrentDeploymentSchema, allow_none=True)
    created_at = fields.DateTime()

    def _pending_reason(self, environment: Any) -> str | None:
        if isinstance(environment, dict):  # an answer put together field by field
            return environment.get("pending_reason")
        session = object_session(environment)
        if session is None:
            return None
        interval = current_app.extensions["portside.settings"].agent_interval
        return pending.pending_reason(session, environment, interval)


class ApproveSchema(Schema):
    sha = fields.String(
        required=True,
        validate=validate.Regexp(r"^[0-9a-f]{40}$"),
        metadata={"description": "the commit reviewed; refused (409) unless it is the head"},
    )


class EnvironmentApproveSchema(Schema):
    sha = fields.String(
        load_default=None,
        validate=validate.Regexp(r"^[0-9a-f]{40}$"),
        metadata={
            "description": "the commit reviewed: required for a fork's preview (refused "
            "(409) unless it is the head); for a held deployment, refused unless its commit"
        },
    )


class EnvironmentPatchSchema(Schema):
    approval_required = fields.Boolean(
        metadata={"description": "hold each deployment to it until a person approves it"}
    )


class ApprovalSchema(EnvironmentSchema):
    build_id = fields.Integer(
        allow_none=True, metadata={"description": "the build the approval started, if any"}
    )
    deployment_id = fields.Integer(
        allow_none=True, metadata={"description": "the held deployment it released, if any"}
    )


class RollbackSchema(Schema):
    deployment_id = fields.Integer(load_default=None, allow_none=True)
