"""Agent hosts."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class HostCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=253))
    accepts_previews = fields.Boolean(load_default=False)
    untrusted = fields.Boolean(
        load_default=False,
        metadata={"description": "runs fork previews (code nobody reviewed), never production"},
    )


class HostSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    accepts_previews = fields.Boolean()
    untrusted = fields.Boolean()
    generation = fields.Integer()
    last_seen_at = fields.DateTime(allow_none=True)
    agent_version = fields.String(allow_none=True)
    created_at = fields.DateTime()


class NewHostSchema(HostSchema):
    token = fields.String(metadata={"description": "the agent's token; shown once"})


class HostDetailSchema(HostSchema):
    applied_generation = fields.Integer()
    online = fields.Boolean()
    environments = fields.List(fields.Dict())
