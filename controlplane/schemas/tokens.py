"""API tokens."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from controlplane.statuses import (
    BUILD_LANES,
    TOKEN_SCOPES,
)


class TokenCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    scope = fields.String(required=True, validate=validate.OneOf(TOKEN_SCOPES[:3]))
    builds = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(BUILD_LANES),
        metadata={
            "description": "a worker token's lane: trusted builds (the default), "
            "untrusted ones (forks' code) or all"
        },
    )


class TokenSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    scope = fields.String()
    builds = fields.String(
        allow_none=True, metadata={"description": "a worker token's lane; null: trusted"}
    )
    host_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)


class NewTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "shown once; store it now"})
