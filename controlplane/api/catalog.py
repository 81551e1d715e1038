"""``/v1/services``: deployed services, deploying one by hand, its variables and its
previews' password."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from flask_smorest import Blueprint, Page

from controlplane import schemas
from controlplane.api.auth import actor, current_token, require
from controlplane.api.requestdb import session
from controlplane.crypto import SecretBox
from controlplane.errors import NotPermitted
from controlplane.services import (
    appsetup,
    audit,
    catalog,
    envactions,
    scaling,
    servicerules,
    variables,
)
from controlplane.statuses import TokenScope

blueprint = Blueprint(
    "services", __name__, url_prefix="/v1/services", description="Deployed services"
)


@blueprint.post("")
@require("admin")
@blueprint.arguments(schemas.ServiceCreateSchema)
@blueprint.response(201, schemas.ServiceSchema)
def create_service(data: dict[str, Any]) -> Any:
    db = session()
    settings = current_app.extensions["portside.settings"]
    data, scale = scaling.split(data)
    data["host"] = scaling.primary_host(data, scale)
    service = catalog.create_service(
        db,
        servicerules.spec_from(data),
        actor(),
        box=SecretBox.from_settings(settings) if settings.secret_key else None,
        allow_local_git=settings.allow_local_git,
    )
    if scale:
        service = scaling.scale(db, service.id, actor(), **scale)
    db.commit()
    return service


@blueprint.get("")
@require("read")
@blueprint.response(200, schemas.ServiceSchema(many=True))
@blueprint.paginate(Page)
def list_services() -> list[Any]:
    return catalog.list_services(session())


@blueprint.get("/<int:service_id>")
@require("read")
@blueprint.response(200, schemas.ServiceSchema)
def get_service(service_id: int) -> Any:
    return catalog.get_service(session(), service_id)


@blueprint.patch("/<int:service_id>")
@require("admin")
@blueprint.arguments(schemas.ServicePatchSchema)
@blueprint.response(200, schemas.ServiceSchema)
def update_service(changes: dict[str, Any], service_id: int) -> Any:
    db = session()
    changes, scale = scaling.split(changes)
    if changes or not scale:
        service = catalog.update_service(db, service_id, changes, actor())
    if scale:
        service = scaling.scale(db, service_id, actor(), **scale)
    db.commit()
    return service


@blueprint.post("/<int:service_id>/preview-password")
@require("admin")
@blueprint.response(201, schemas.PreviewPasswordSchema)
def generate_preview_password(service_id: int) -> Any:
    """Generate a new basic-auth password for the service's previews (the old one stops
    working) and turn ``basic_auth`` on; the password is in this answer only."""
    db = session()
    box = SecretBox.from_settings(current_app.extensions["portside.settings"])
    username, password = catalog.generate_preview_password(db, box, service_id, actor())
    db.commit()
    return {"username": username, "password": password}


@blueprint.post("/<int:service_id>/deploy")
@require("admin")
@blueprint.arguments(schemas.DeploySchema)
@blueprint.response(202, schemas.BuildSchema)
@blueprint.alt_response(422, schema=schemas.ApiErrorSchema, description="unknown ref")
@blueprint.alt_response(
    409, schema=schemas.ApiErrorSchema, description="the App may not read this repository"
)
@blueprint.alt_response(503, schema=schemas.ApiErrorSchema, description="GitHub unreachable")
def deploy_service(data: dict[str, Any], service_id: int) -> Any:
    """Build and deploy to production what a branch, tag or commit SHA names (default: the
    head of the service's branch), even a commit older than the one running."""
    db = session()
    github = appsetup.github_of(current_app.extensions)
    settings = current_app.extensions["portside.settings"]
    box = SecretBox.from_settings(settings) if settings.secret_key else None
    build = envactions.deploy_ref(db, github, service_id, data["ref"], actor(), box=box)
    db.commit()
    return build


@blueprint.get("/<int:service_id>/variables")
@require("read")
@blueprint.arguments(schemas.VariableQuerySchema, location="query")
@blueprint.response(200, schemas.VariableSchema(many=True))
def list_variables(query: dict[str, Any], service_id: int) -> list[dict[str, Any]]:
    """Values are hidden unless an admin asks with ``?reveal=true`` (which is audited)."""
    db = session()
    reveal = query["reveal"]
    if reveal and current_token().scope != TokenScope.ADMIN:
        raise NotPermitted("revealing values needs an admin token")
    box = SecretBox.from_settings(current_app.extensions["portside.settings"]) if reveal else None
    rows = variables.list_variables(db, service_id)
    if reveal:
        audit.record(db, actor(), "variable.reveal", "service", service_id)
        db.commit()
    return [
        {
            "name": row.name,
            "kind": row.kind,
            "scope": row.scope,
            "is_secret": row.is_secret,
            "updated_at": row.updated_at,
            "value": box.decrypt(row.value_encrypted) if box else None,
        }
        for row in rows
    ]


@blueprint.put("/<int:service_id>/variables/<name>")
@require("admin")
@blueprint.arguments(schemas.VariableSetSchema)
@blueprint.response(200, schemas.VariableSchema)
def set_variable(data: dict[str, Any], service_id: int, name: str) -> Any:
    db = session()
    box = SecretBox.from_settings(current_app.extensions["portside.settings"])
    variable = variables.set_variable(
        db,
        box,
        service_id,
        name=name,
        value=data["value"],
        kind=data["kind"],
        scope=data["scope"],
        is_secret=data["secret"],
        actor=actor(),
    )
    db.commit()
    return variable


@blueprint.delete("/<int:service_id>/variables/<kind>/<name>")
@require("admin")
@blueprint.response(204)
def delete_variable(service_id: int, kind: str, name: str) -> None:
    db = session()
    variables.delete_variable(db, service_id, kind, name, actor())
    db.commit()


@blueprint.delete("/<int:service_id>")
@require("admin")
@blueprint.response(204)
def delete_service(service_id: int) -> Response | None:
    db = session()
    catalog.delete_service(db, service_id, actor())
    db.commit()
    return None
