"""``/v1/audit``: who changed what and when (admin only)."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from controlplane import schemas
from controlplane.api.auth import require
from controlplane.api.shaping import paged
from controlplane.services import listings

blueprint = Blueprint("audit", __name__, url_prefix="/v1/audit", description="Audit log")


@blueprint.get("")
@require("admin")
@blueprint.arguments(schemas.AuditQuerySchema, location="query")
@blueprint.response(200, schemas.AuditEventSchema(many=True))
@blueprint.paginate()
def list_audit(query: dict[str, Any], pagination_parameters: Any) -> list[Any]:
    """Who changed what and when, newest first (never secret values)."""
    statement = listings.audit_events(
        action=query.get("action"), target_type=query.get("target_type")
    )
    return paged(statement, pagination_parameters)
