"""``/v1/hosts``: agent hosts, and what each one runs."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint

from controlplane import schemas
from controlplane.api.auth import actor, require
from controlplane.api.requestdb import session
from controlplane.api.shaping import paged, row_fields
from controlplane.services import hosts, listings

blueprint = Blueprint("hosts", __name__, url_prefix="/v1/hosts", description="Agent hosts")


@blueprint.post("")
@require("admin")
@blueprint.arguments(schemas.HostCreateSchema)
@blueprint.response(201, schemas.NewHostSchema)
def create_host(data: dict[str, Any]) -> dict[str, Any]:
    db = session()
    host, secret = hosts.create_host(
        db, data["name"], actor(), data["accepts_previews"], untrusted=data["untrusted"]
    )
    db.commit()
    return row_fields(host, schemas.HostSchema, token=secret)


@blueprint.get("")
@require("read")
@blueprint.response(200, schemas.HostDetailSchema(many=True))
@blueprint.paginate()
def list_hosts(pagination_parameters: Any) -> list[dict[str, Any]]:
    """Hosts with last seen time, agent version and what each environment is running."""
    interval = current_app.extensions["portside.settings"].agent_interval
    listed = paged(listings.hosts(), pagination_parameters)
    return [
        {
            **row_fields(item.host, schemas.HostSchema),
            "applied_generation": item.host.applied_generation,
            "online": item.online,
            "environments": [
                {
                    "name": env.name,
                    "status": env.status,
                    "deployment_id": env.current_deployment_id,
                    "address": env.address,
                }
                for env in item.environments
            ],
        }
        for item in listings.overview(session(), listed, interval)
    ]
