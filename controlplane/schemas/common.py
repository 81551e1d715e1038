"""Shared by every resource: the error body and a compose key's pattern."""

from __future__ import annotations

from marshmallow import Schema, fields

# A service-level compose key name (``cap_add``, ``sysctls``).
COMPOSE_KEY = r"^[a-z][a-z0-9_]{0,63}$"


class ApiErrorSchema(Schema):
    error = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Raw()
