"""Registry credentials."""

from __future__ import annotations

from marshmallow import Schema, fields


class RegistryCreateSchema(Schema):
    address = fields.String(required=True)
    username = fields.String(load_default=None, allow_none=True)
    password = fields.String(load_default=None, allow_none=True, load_only=True)
    installation_id = fields.Integer(load_default=None, allow_none=True)
    # Read-only credentials: the only ones agents receive (write-only here).
    pull_username = fields.String(load_default=None, allow_none=True)
    pull_password = fields.String(load_default=None, allow_none=True, load_only=True)


class RegistrySchema(Schema):
    id = fields.Integer()
    address = fields.String()
    username = fields.String(allow_none=True)
    installation_id = fields.Integer(allow_none=True)
    has_password = fields.Function(lambda r: r.password_encrypted is not None)
    pull_username = fields.String(allow_none=True)
    has_pull_password = fields.Function(lambda r: r.pull_password_encrypted is not None)
    created_at = fields.DateTime()
