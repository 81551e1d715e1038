"""``/v1/services/{id}/notifications``: where a service's deploy events are sent."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint

from controlplane import schemas
from controlplane.api.auth import actor, require
from controlplane.api.requestdb import session
from controlplane.crypto import SecretBox
from controlplane.models import NotificationTarget
from controlplane.services import notifications

blueprint = Blueprint(
    "notifications",
    __name__,
    url_prefix="/v1/services",
    description="Notification targets of a service: signed webhooks and Slack",
)
ERRORS = {401: "no valid token", 403: "token of the wrong scope", 404: "no such service"}


def _shown(target: NotificationTarget, **extra: Any) -> dict[str, Any]:
    return {
        "id": target.id,
        "service_id": target.service_id,
        "kind": target.kind,
        "url": notifications.masked_url(target.url),
        "signed": target.secret_encrypted is not None,
        "created_at": target.created_at,
        **extra,
    }


@blueprint.post("/<int:service_id>/notifications")
@require("admin")
@blueprint.arguments(schemas.NotificationTargetCreateSchema)
@blueprint.response(201, schemas.NewNotificationTargetSchema)
@blueprint.alt_response(401, schema=schemas.ApiErrorSchema, description=ERRORS[401])
@blueprint.alt_response(403, schema=schemas.ApiErrorSchema, description=ERRORS[403])
@blueprint.alt_response(404, schema=schemas.ApiErrorSchema, description=ERRORS[404])
def add_target(data: dict[str, Any], service_id: int) -> dict[str, Any]:
    """A webhook target gets a signing secret, generated and shown once if none is given."""
    db = session()
    box = SecretBox.from_settings(current_app.extensions["portside.settings"])
    target, secret = notifications.add_target(
        db,
        box,
        service_id,
        kind=data["kind"],
        url=data["url"],
        secret=data["secret"],
        actor=actor(),
    )
    db.commit()
    return _shown(target, secret=secret)


@blueprint.get("/<int:service_id>/notifications")
@require("read")
@blueprint.response(200, schemas.NotificationTargetSchema(many=True))
@blueprint.alt_response(401, schema=schemas.ApiErrorSchema, description=ERRORS[401])
@blueprint.alt_response(404, schema=schemas.ApiErrorSchema, description=ERRORS[404])
def list_targets(service_id: int) -> list[dict[str, Any]]:
    return [_shown(target) for target in notifications.list_targets(session(), service_id)]


@blueprint.delete("/<int:service_id>/notifications/<int:target_id>")
@require("admin")
@blueprint.response(204)
@blueprint.alt_response(401, schema=schemas.ApiErrorSchema, description=ERRORS[401])
@blueprint.alt_response(403, schema=schemas.ApiErrorSchema, description=ERRORS[403])
@blueprint.alt_response(404, schema=schemas.ApiErrorSchema, description=ERRORS[404])
def delete_target(service_id: int, target_id: int) -> None:
    db = session()
    notifications.delete_target(db, service_id, target_id, actor())
    db.commit()
