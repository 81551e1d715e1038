"""A service's notification targets."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from controlplane.statuses import NotificationKind, values


class NotificationTargetCreateSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(values(NotificationKind)))
    url = fields.Url(
        required=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=2048),
    )
    secret = fields.String(
        load_default=None,
        allow_none=True,
        load_only=True,
        validate=validate.Length(min=8, max=255),
        metadata={"description": "signs webhooks; generated (and shown once) when omitted"},
    )


class NotificationTargetSchema(Schema):
    id = fields.Integer()
    service_id = fields.Integer()
    kind = fields.String()
    url = fields.String(metadata={"description": "path and query hidden: they hold credentials"})
    signed = fields.Boolean()
    created_at = fields.DateTime()


class NewNotificationTargetSchema(NotificationTargetSchema):
    secret = fields.String(
        allow_none=True,
        metadata={"description": "the webhook's signing secret, shown this once"},
    )
