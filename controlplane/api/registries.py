"""``/v1/registries``: credentials for the registries builds push to (admin only)."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint, Page

from controlplane import schemas
from controlplane.api.auth import actor, require
from controlplane.api.requestdb import session
from controlplane.crypto import SecretBox
from controlplane.services import registries

blueprint = Blueprint(
    "registries", __name__, url_prefix="/v1/registries", description="Registry credentials"
)


@blueprint.post("")
@require("admin")
@blueprint.arguments(schemas.RegistryCreateSchema)
@blueprint.response(201, schemas.RegistrySchema)
def create_registry(data: dict[str, Any]) -> Any:
    db = session()
    box = SecretBox.from_settings(current_app.extensions["portside.settings"])
    registry = registries.create_registry(db, box, **data, actor=actor())
    db.commit()
    return registry


@blueprint.get("")
@require("admin")
@blueprint.response(200, schemas.RegistrySchema(many=True))
@blueprint.paginate(Page)
def list_registries() -> list[Any]:
    return registries.list_registries(session())


@blueprint.delete("/<int:registry_id>")
@require("admin")
@blueprint.response(204)
def delete_registry(registry_id: int) -> None:
    db = session()
    registries.delete_registry(db, registry_id, actor())
    db.commit()
