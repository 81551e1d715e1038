"""``/v1/deliveries``: the GitHub webhook deliveries received, and redelivering one."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from controlplane import schemas
from controlplane.api.auth import actor, require
from controlplane.api.requestdb import session
from controlplane.api.shaping import paged
from controlplane.models import WebhookDelivery
from controlplane.services import audit, deliveries, listings

blueprint = Blueprint(
    "deliveries", __name__, url_prefix="/v1/deliveries", description="GitHub webhook deliveries"
)


@blueprint.get("")
@require("read")
@blueprint.arguments(schemas.DeliveryQuerySchema, location="query")
@blueprint.response(200, schemas.DeliverySchema(many=True))
@blueprint.paginate()
def list_deliveries(query: dict[str, Any], pagination_parameters: Any) -> list[Any]:
    statement = listings.deliveries(event=query.get("event"), status=query.get("status"))
    return paged(statement, pagination_parameters)


@blueprint.get("/<int:delivery_id>")
@require("read")
@blueprint.response(200, schemas.DeliveryDetailSchema)
def get_delivery(delivery_id: int) -> WebhookDelivery:
    return listings.get_delivery(session(), delivery_id)


@blueprint.post("/<int:delivery_id>/redeliver")
@require("admin")
@blueprint.response(202, schemas.DeliverySchema)
def redeliver(delivery_id: int) -> WebhookDelivery:
    db = session()
    delivery = deliveries.redeliver(db, delivery_id)
    audit.record(db, actor(), "delivery.redeliver", "delivery", delivery_id)
    db.commit()
    return delivery
