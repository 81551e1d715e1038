"""The audit log."""

from __future__ import annotations

from marshmallow import Schema, fields


class AuditQuerySchema(Schema):
    action = fields.String()
    target_type = fields.String()


class AuditEventSchema(Schema):
    id = fields.Integer()
    actor = fields.String()
    action = fields.String()
    target_type = fields.String()
    target_id = fields.String(allow_none=True)
    detail = fields.Dict()
    created_at = fields.DateTime()
