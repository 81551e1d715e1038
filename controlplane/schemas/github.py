"""What GitHub sent: webhook deliveries, App installations and their repositories."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from controlplane.statuses import (
    DELIVERY_STATUSES,
)


class DeliveryQuerySchema(Schema):
    event = fields.String()
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


class DeliverySchema(Schema):
    id = fields.Integer()
    guid = fields.String()
    event = fields.String()
    action = fields.String(allow_none=True)
    installation_id = fields.Integer(allow_none=True)
    repository_id = fields.Integer(allow_none=True)
    repository_full_name = fields.String(allow_none=True)
    status = fields.String()
    outcome = fields.String(allow_none=True)
    attempts = fields.Integer()
    received_at = fields.DateTime()
    enqueued_at = fields.DateTime(allow_none=True)
    processed_at = fields.DateTime(allow_none=True)


class DeliveryDetailSchema(DeliverySchema):
    payload = fields.Dict()


class InstallationSchema(Schema):
    id = fields.Integer()
    account_login = fields.String()
    account_type = fields.String()
    suspended_at = fields.DateTime(allow_none=True)
    deleted_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class RepositorySchema(Schema):
    id = fields.Integer()
    installation_id = fields.Integer()
    full_name = fields.String()
    private = fields.Boolean()
    default_branch = fields.String(allow_none=True)
    clone_url = fields.String(allow_none=True)
    compose_path = fields.String(allow_none=True)
    compose_checked_at = fields.DateTime(allow_none=True)
