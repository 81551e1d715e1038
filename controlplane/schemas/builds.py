"""Builds as people read them: steps, images, logs, and deploying a ref."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, missing, validate
from sqlalchemy.orm import object_session

from controlplane.services import dispatch, images


class BuildStepSchema(Schema):
    name = fields.String()
    status = fields.String()
    attempts = fields.Integer()
    error = fields.String(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class BuildImageSchema(Schema):
    service = fields.String(metadata={"description": "the compose service; app: one container"})
    repository = fields.String(allow_none=True)
    tag = fields.String(allow_none=True)
    digest = fields.String(allow_none=True)
    reference = fields.String(
        allow_none=True, metadata={"description": "repository@digest: what runs"}
    )


class BuildImagesField(fields.List):  # type: ignore[type-arg]
    """A build's images (:func:`controlplane.services.images.listed`), read from the
    dumped object itself or from its attribute named by ``of`` (a deployment's ``build``)."""

    def __init__(self, *, of: str | None = None, **kwargs: Any) -> None:
        super().__init__(fields.Nested(BuildImageSchema), dump_only=True, **kwargs)
        self.of = of

    def get_value(self, obj: Any, attr: str, accessor: Any = None, default: Any = missing) -> Any:
        build = obj if self.of is None else getattr(obj, self.of, None)
        return images.listed(build) if build is not None else []


class BuildQuerySchema(Schema):
    service = fields.Integer()
    environment = fields.Integer()
    status = fields.String()


class BuildSchema(Schema):
    id = fields.Integer()
    service_id = fields.Integer()
    environment_id = fields.Integer()
    commit_sha = fields.String()
    branch = fields.String()
    status = fields.String()
    commit_message = fields.String(allow_none=True)
    author = fields.String(allow_none=True)
    delivery_id = fields.Integer(allow_none=True)
    ref = fields.String(
        allow_none=True,
        metadata={"description": "the branch, tag or commit it was deployed by, or its tag"},
    )
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    images = BuildImagesField(metadata={"description": "what the build pushed, by digest"})
    waiting_reason = fields.Method(
        "_waiting_reason",
        allow_none=True,
        metadata={
            "description": "why a queued build is not taken (no worker online), or what a "
            "built one waits for (checks, an approval), or null"
        },
    )

    def _waiting_reason(self, build: Any) -> str | None:
        session = object_session(build)
        return dispatch.waiting_reason(session, build) if session is not None else None


class BuildDetailSchema(BuildSchema):
    steps = fields.List(fields.Nested(BuildStepSchema))


class DeploySchema(Schema):
    ref = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=255),
        metadata={"description": "a branch, tag or commit SHA; default: the service's branch"},
    )


class LogLineSchema(Schema):
    id = fields.String()
    line = fields.String()


class LogsSchema(Schema):
    build_id = fields.Integer()
    status = fields.String()
    complete = fields.Boolean()
    lines = fields.List(fields.String())
