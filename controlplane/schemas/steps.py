"""The build worker's side of the step protocol: claims, specs, results, artifacts, and
the credentials a step fetches."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from controlplane.statuses import StepStatus


class StepClaimSchema(Schema):
    attempt = fields.Integer(required=True)
    worker = fields.String(required=True, validate=validate.Length(min=1, max=255))


class ClaimedStepSchema(Schema):
    build_id = fields.Integer()
    attempt = fields.Integer()
    step = fields.String()
    service_id = fields.Integer()
    service = fields.String()
    environment = fields.String()
    repository = fields.String()
    installation_id = fields.Integer(allow_none=True)
    clone_url = fields.String(allow_none=True)
    git_remote = fields.Boolean()
    commit_sha = fields.String()
    branch = fields.String()
    compose_path = fields.String(allow_none=True)
    compose_allow = fields.List(fields.String())
    images = fields.Dict()
    build_args = fields.Dict(keys=fields.String(), values=fields.String())
    untrusted = fields.Boolean()
    pr_number = fields.Integer(allow_none=True)
    cache_from = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
    registry_auth = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        allow_none=True,
        metadata={"description": "build and push: the registry's push credentials, or null"},
    )


class StepResultSchema(Schema):
    attempt = fields.Integer(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf((StepStatus.SUCCEEDED.value, StepStatus.FAILED.value)),
    )
    error = fields.String(load_default=None, allow_none=True)
    worker = fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=255),
        metadata={"description": "claim the next step for this worker in the same exchange"},
    )
    artifacts = fields.Nested(
        "StepArtifactsSchema",
        load_default=None,
        metadata={"description": "upload_compose: the pushed images and pinned compose file"},
    )


class StepDeploymentSchema(Schema):
    id = fields.Integer(allow_none=True, metadata={"description": "null: held at a gate"})
    status = fields.String()
    error = fields.String(allow_none=True)


class StepFinishedSchema(Schema):
    """The answer to a finish that names its ``worker``."""

    next = fields.Nested(ClaimedStepSchema, allow_none=True, metadata={"description": "claimed"})
    deployment = fields.Nested(StepDeploymentSchema, allow_none=True)


class HeartbeatSchema(Schema):
    attempt = fields.Integer(required=True)


class ImageSchema(Schema):
    repository = fields.String(required=True)
    tag = fields.String(required=True)
    digest = fields.String(required=True, validate=validate.Regexp(r"^sha256:[0-9a-f]{64}$"))


class StepArtifactsSchema(Schema):
    images = fields.Dict(keys=fields.String(), values=fields.Nested(ImageSchema), required=True)
    compose = fields.String(load_default=None, allow_none=True)
    routed_service = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=63)
    )


class ArtifactsSchema(StepArtifactsSchema):
    attempt = fields.Integer(required=True)


class GitTokenSchema(Schema):
    """An installation token (GitHub), or a git-URL service's own token or SSH key."""

    token = fields.String(allow_none=True)
    ssh_key = fields.String(allow_none=True)
    expires_in = fields.Integer(allow_none=True)


class GitTokenQuerySchema(Schema):
    refresh = fields.Boolean(load_default=False)


class RegistryCredentialsSchema(Schema):
    address = fields.String()
    username = fields.String(allow_none=True)
    password = fields.String(allow_none=True)


class DeploymentCreateSchema(Schema):
    build_id = fields.Integer(required=True)
