"""The REST API under /v1 (flask-smorest): thin views over controlplane.services."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from flask_smorest import Blueprint, Page
from marshmallow import Schema, fields
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane import schemas
from controlplane.api.auth import actor, current_token, forget_host_token, require
from controlplane.crypto import SecretBox
from controlplane.db import session
from controlplane.errors import Conflict, Forbidden, NotFound
from controlplane.models import AuditEvent, Build, Environment, Host, WebhookDelivery
from controlplane.services import (
    approvals,
    appsetup,
    audit,
    deliveries,
    hosts,
    installations,
    placements,
    previews,
    registries,
    rollbacks,
    scaling,
    services,
    staging,
    tokens,
    variables,
)
from tasks import pipeline

tokens_api = Blueprint("tokens", __name__, url_prefix="/v1/tokens", description="API tokens")
hosts_api = Blueprint("hosts", __name__, url_prefix="/v1/hosts", description="Agent hosts")
deliveries_api = Blueprint(
    "deliveries", __name__, url_prefix="/v1/deliveries", description="GitHub webhook deliveries"
)
installations_api = Blueprint(
    "installations", __name__, url_prefix="/v1/installations", description="App installations"
)
services_api = Blueprint(
    "services", __name__, url_prefix="/v1/services", description="Deployed services"
)
builds_api = Blueprint("builds", __name__, url_prefix="/v1/builds", description="Builds")
environments_api = Blueprint(
    "environments", __name__, url_prefix="/v1/environments", description="Environments"
)
audit_api = Blueprint("audit", __name__, url_prefix="/v1/audit", description="Audit log")
registries_api = Blueprint(
    "registries", __name__, url_prefix="/v1/registries", description="Registry credentials"
)

BLUEPRINTS = (
    tokens_api,
    hosts_api,
    deliveries_api,
    installations_api,
    services_api,
    builds_api,
    registries_api,
    environments_api,
    audit_api,
)
ERRORS = {401: "no valid token", 403: "token of the wrong scope"}


def _fields(row: Any, schema: type[Schema], **extra: Any) -> dict[str, Any]:
    """A row's attributes named by ``schema`` (computed ones computed from the row), plus
    ``extra``, for a response schema to dump."""
    return {
        name: field.serialize(name, row) if isinstance(field, fields.Method) else getattr(row, name)
        for name, field in schema().fields.items()
    } | extra


def _paged(db: Session, query: Any, pagination: Any) -> list[Any]:
    pagination.item_count = db.scalar(select(func.count()).select_from(query.subquery()))
    offset = (pagination.page - 1) * pagination.page_size
    return list(db.scalars(query.offset(offset).limit(pagination.page_size)))


@tokens_api.post("")
@require("admin")
@tokens_api.arguments(schemas.TokenCreateSchema)
@tokens_api.response(201, schemas.NewTokenSchema)
@tokens_api.alt_response(401, schema=schemas.ApiErrorSchema, description=ERRORS[401])
def create_token(data: dict[str, Any]) -> dict[str, Any]:
    db = session()
    token, secret = tokens.create_token(
        db, data["name"], data["scope"], actor=actor(), builds=data["builds"]
    )
    db.commit()
    return _fields(token, schemas.TokenSchema, token=secret)


@tokens_api.get("")
@require("admin")
@tokens_api.response(200, schemas.TokenSchema(many=True))
@tokens_api.paginate(Page)
def list_tokens() -> list[Any]:
    return tokens.list_tokens(session())


@tokens_api.delete("/<int:token_id>")
@require("admin")
@tokens_api.response(204)
def revoke_token(token_id: int) -> None:
    db = session()
    token = tokens.revoke_token(db, token_id, actor())
    db.commit()
    forget_host_token(current_app.extensions["portside.redis"], token.public_id)


@hosts_api.post("")
@require("admin")
@hosts_api.arguments(schemas.HostCreateSchema)
@hosts_api.response(201, schemas.NewHostSchema)
def create_host(data: dict[str, Any]) -> dict[str, Any]:
    db = session()
    host, secret = hosts.create_host(
        db, data["name"], actor(), data["accepts_previews"], untrusted=data["untrusted"]
    )
    db.commit()
    return _fields(host, schemas.HostSchema, token=secret)


@hosts_api.get("")
@require("read")
@hosts_api.response(200, schemas.HostDetailSchema(many=True))
@hosts_api.paginate()
def list_hosts(pagination_parameters: Any) -> list[dict[str, Any]]:
    """Hosts with last seen time, agent version and what each environment is running."""
    db = session()
    interval = current_app.extensions["portside.settings"].agent_interval
    listed = _paged(db, select(Host).order_by(Host.name), pagination_parameters)
    result = []
    for host in listed:
        running = db.scalars(
            select(Environment).where(
                placements.placed_on(host.id), Environment.status != "inactive"
            )
        )
        result.append(
            {
                **_fields(host, schemas.HostSchema),
                "applied_generation": host.applied_generation,
                "online": hosts.is_online(host, interval),
                "environments": [
                    {
                        "name": env.name,
                        "status": env.status,
                        "deployment_id": env.current_deployment_id,
                        "address": env.address,
                    }
                    for env in running
                ],
            }
        )
    return result


@deliveries_api.get("")
@require("read")
@deliveries_api.arguments(schemas.DeliveryQuerySchema, location="query")
@deliveries_api.response(200, schemas.DeliverySchema(many=True))
@deliveries_api.paginate()
def list_deliveries(query: dict[str, Any], pagination_parameters: Any) -> list[Any]:
    statement = select(WebhookDelivery).order_by(WebhookDelivery.id.desc())
    if "event" in query:
        statement = statement.where(WebhookDelivery.event == query["event"])
    if "status" in query:
        statement = statement.where(WebhookDelivery.status == query["status"])
    return _paged(session(), statement, pagination_parameters)


@deliveries_api.get("/<int:delivery_id>")
@require("read")
@deliveries_api.response(200, schemas.DeliveryDetailSchema)
def get_delivery(delivery_id: int) -> WebhookDelivery:
    delivery = session().get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    return delivery


@deliveries_api.post("/<int:delivery_id>/redeliver")
@require("admin")
@deliveries_api.response(202, schemas.DeliverySchema)
def redeliver(delivery_id: int) -> WebhookDelivery:
    db = session()
    delivery = deliveries.redeliver(db, delivery_id)
    audit.record(db, actor(), "delivery.redeliver", "delivery", delivery_id)
    db.commit()
    return delivery


@installations_api.get("")
@require("read")
@installations_api.response(200, schemas.InstallationSchema(many=True))
@installations_api.paginate(Page)
def list_installations() -> list[Any]:
    return installations.list_installations(session())


@installations_api.get("/<int:installation_id>/repositories")
@require("read")
@installations_api.response(200, schemas.RepositorySchema(many=True))
@installations_api.paginate(Page)
def list_repositories(installation_id: int) -> list[Any]:
    return installations.list_repositories(session(), installation_id)


@services_api.post("")
@require("admin")
@services_api.arguments(schemas.ServiceCreateSchema)
@services_api.response(201, schemas.ServiceSchema)
def create_service(data: dict[str, Any]) -> Any:
    db = session()
    settings = current_app.extensions["portside.settings"]
    data, scale = scaling.split(data)
    data["host"] = scaling.primary_host(data, scale)
    service = services.create_service(
        db,
        services.spec_from(data),
        actor(),
        box=SecretBox.from_settings(settings) if settings.secret_key else None,
        allow_local_git=settings.allow_local_git,
    )
    if scale:
        service = scaling.scale(db, service.id, actor(), **scale)
    db.commit()
    return service


@services_api.get("")
@require("read")
@services_api.response(200, schemas.ServiceSchema(many=True))
@services_api.paginate(Page)
def list_services() -> list[Any]:
    return services.list_services(session())


@services_api.get("/<int:service_id>")
@require("read")
@services_api.response(200, schemas.ServiceSchema)
def get_service(service_id: int) -> Any:
    return services.get_service(session(), service_id)


@services_api.patch("/<int:service_id>")
@require("admin")
@services_api.arguments(schemas.ServicePatchSchema)
@services_api.response(200, schemas.ServiceSchema)
def update_service(changes: dict[str, Any], service_id: int) -> Any:
    db = session()
    changes, scale = scaling.split(changes)
    if changes or not scale:
        service = services.update_service(db, service_id, changes, actor())
    if scale:
        service = scaling.scale(db, service_id, actor(), **scale)
    db.commit()
    return service


@services_api.post("/<int:service_id>/preview-password")
@require("admin")
@services_api.response(201, schemas.PreviewPasswordSchema)
def generate_preview_password(service_id: int) -> Any:
    """Generate a new basic-auth password for the service's previews (the old one stops
    working) and turn ``basic_auth`` on; the password is in this answer only."""
    db = session()
    box = SecretBox.from_settings(current_app.extensions["portside.settings"])
    username, password = services.generate_preview_password(db, box, service_id, actor())
    db.commit()
    return {"username": username, "password": password}


@services_api.post("/<int:service_id>/deploy")
@require("admin")
@services_api.arguments(schemas.DeploySchema)
@services_api.response(202, schemas.BuildSchema)
@services_api.alt_response(422, schema=schemas.ApiErrorSchema, description="unknown ref")
@services_api.alt_response(
    409, schema=schemas.ApiErrorSchema, description="the App may not read this repository"
)
@services_api.alt_response(503, schema=schemas.ApiErrorSchema, description="GitHub unreachable")
def deploy_service(data: dict[str, Any], service_id: int) -> Any:
    """Build and deploy to production what a branch, tag or commit SHA names (default: the
    head of the service's branch), even a commit older than the one running."""
    db = session()
    github = appsetup.github_of(current_app.extensions)
    settings = current_app.extensions["portside.settings"]
    box = SecretBox.from_settings(settings) if settings.secret_key else None
    build = services.deploy_ref(db, github, service_id, data["ref"], actor(), box=box)
    db.commit()
    pipeline.enqueue_build(build.id)
    return build


@services_api.get("/<int:service_id>/variables")
@require("read")
@services_api.arguments(schemas.VariableQuerySchema, location="query")
@services_api.response(200, schemas.VariableSchema(many=True))
def list_variables(query: dict[str, Any], service_id: int) -> list[dict[str, Any]]:
    """Values are hidden unless an admin asks with ``?reveal=true`` (which is audited)."""
    db = session()
    reveal = query["reveal"]
    if reveal and current_token().scope != "admin":
        raise Forbidden("revealing values needs an admin token")
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


@services_api.put("/<int:service_id>/variables/<name>")
@require("admin")
@services_api.arguments(schemas.VariableSetSchema)
@services_api.response(200, schemas.VariableSchema)
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


@services_api.delete("/<int:service_id>/variables/<kind>/<name>")
@require("admin")
@services_api.response(204)
def delete_variable(service_id: int, kind: str, name: str) -> None:
    db = session()
    variables.delete_variable(db, service_id, kind, name, actor())
    db.commit()


@services_api.delete("/<int:service_id>")
@require("admin")
@services_api.response(204)
def delete_service(service_id: int) -> Response | None:
    db = session()
    services.delete_service(db, service_id, actor())
    db.commit()
    return None


@builds_api.get("")
@require("read")
@builds_api.arguments(schemas.BuildQuerySchema, location="query")
@builds_api.response(200, schemas.BuildSchema(many=True))
@builds_api.paginate()
def list_builds(query: dict[str, Any], pagination_parameters: Any) -> list[Any]:
    statement = select(Build).order_by(Build.id.desc())
    if "service" in query:
        statement = statement.where(Build.service_id == query["service"])
    if "environment" in query:
        statement = statement.where(Build.environment_id == query["environment"])
    if "status" in query:
        statement = statement.where(Build.status == query["status"])
    return _paged(session(), statement, pagination_parameters)


@builds_api.get("/<int:build_id>")
@require("read")
@builds_api.response(200, schemas.BuildDetailSchema)
def get_build(build_id: int) -> Build:
    build = session().get(Build, build_id)
    if build is None:
        raise NotFound(f"build {build_id} does not exist")
    return build


@registries_api.post("")
@require("admin")
@registries_api.arguments(schemas.RegistryCreateSchema)
@registries_api.response(201, schemas.RegistrySchema)
def create_registry(data: dict[str, Any]) -> Any:
    db = session()
    box = SecretBox.from_settings(current_app.extensions["portside.settings"])
    registry = registries.create_registry(db, box, **data, actor=actor())
    db.commit()
    return registry


@registries_api.get("")
@require("admin")
@registries_api.response(200, schemas.RegistrySchema(many=True))
@registries_api.paginate(Page)
def list_registries() -> list[Any]:
    return registries.list_registries(session())


@registries_api.delete("/<int:registry_id>")
@require("admin")
@registries_api.response(204)
def delete_registry(registry_id: int) -> None:
    db = session()
    registries.delete_registry(db, registry_id, actor())
    db.commit()


@environments_api.get("")
@require("read")
@environments_api.arguments(schemas.EnvironmentQuerySchema, location="query")
@environments_api.response(200, schemas.EnvironmentSchema(many=True))
@environments_api.paginate()
def list_environments(query: dict[str, Any], pagination_parameters: Any) -> list[Any]:
    statement = select(Environment).order_by(Environment.name)
    if "service" in query:
        statement = statement.where(Environment.service_id == query["service"])
    if "kind" in query:
        statement = statement.where(Environment.kind == query["kind"])
    return _paged(session(), statement, pagination_parameters)


@environments_api.get("/<int:environment_id>")
@require("read")
@environments_api.response(200, schemas.EnvironmentSchema)
def get_environment(environment_id: int) -> Environment:
    environment = session().get(Environment, environment_id)
    if environment is None:
        raise NotFound(f"environment {environment_id} does not exist")
    return environment


@environments_api.post("/<int:environment_id>/rollback")
@require("admin")
@environments_api.arguments(schemas.RollbackSchema)
@environments_api.response(202, schemas.CurrentDeploymentSchema)
def rollback_environment(data: dict[str, Any], environment_id: int) -> Any:
    """Make an earlier successful deployment the desired state again (no rebuild)."""
    db = session()
    deployment = rollbacks.rollback(db, environment_id, data["deployment_id"], actor())
    db.commit()
    return deployment


@environments_api.delete("/<int:environment_id>")
@require("admin")
@environments_api.response(204)
def delete_environment(environment_id: int) -> None:
    """Tear down a preview or a staging environment by hand (production environments go
    with their service; a staging environment's images stay, production may run them)."""
    db = session()
    environment = previews.get_environment(db, environment_id)
    if environment.kind == "production":
        raise Conflict("production is not torn down this way; delete the service instead")
    if environment.kind == "preview":
        previews.teardown(db, environment, actor(), "removed through the API")
    else:
        staging.delete_environment(db, environment, actor())
    db.commit()


@environments_api.post("/<int:environment_id>/redeploy")
@require("admin")
@environments_api.response(202, schemas.BuildSchema)
def redeploy_environment(environment_id: int) -> Any:
    """Build the environment's current commit again and deploy it."""
    db = session()
    build = previews.redeploy(db, environment_id, actor())
    db.commit()
    pipeline.enqueue_build(build.id)
    return build


@environments_api.patch("/<int:environment_id>")
@require("admin")
@environments_api.arguments(schemas.EnvironmentPatchSchema)
@environments_api.response(200, schemas.EnvironmentSchema)
def update_environment(changes: dict[str, Any], environment_id: int) -> Any:
    """Change an environment's settings: ``approval_required`` holds each deployment to it
    until a person approves it (turning it off releases one that waits)."""
    db = session()
    approval = approvals.update_environment(db, environment_id, changes, actor())
    db.commit()
    return approval.environment


@environments_api.post("/<int:environment_id>/approve")
@require("admin")
@environments_api.arguments(schemas.EnvironmentApproveSchema)
@environments_api.response(200, schemas.ApprovalSchema)
@environments_api.alt_response(
    409, schema=schemas.ApiErrorSchema, description="nothing waits, or not that commit"
)
def approve_environment(data: dict[str, Any], environment_id: int) -> Any:
    """Release the deployment waiting for approval in the environment (``sha``, when given,
    must be its commit), or build and run the fork commit a person reviewed (``sha``,
    required then: it must still be the head; the next push waits for a new approval)."""
    db = session()
    approval = approvals.approve(db, environment_id, actor(), data["sha"])
    db.commit()
    if approval.build is not None:
        pipeline.enqueue_build(approval.build.id)
    return _fields(
        approval.environment,
        schemas.EnvironmentSchema,
        build_id=approval.build.id if approval.build else None,
        deployment_id=approval.deployment.id if approval.deployment else None,
    )


@environments_api.post("/<int:environment_id>/approve-secrets")
@require("admin")
@environments_api.arguments(schemas.ApproveSchema)
@environments_api.response(200, schemas.EnvironmentSchema)
@environments_api.alt_response(409, schema=schemas.ApiErrorSchema, description="not the head")
def approve_secrets(data: dict[str, Any], environment_id: int) -> Any:
    """Let the fork commit a person reviewed (``sha``, required: the head) receive the
    service's secrets (a decision per commit, like the approval to run it)."""
    db = session()
    environment = previews.approve_secrets(db, environment_id, actor(), data["sha"])
    db.commit()
    return environment


@audit_api.get("")
@require("admin")
@audit_api.arguments(schemas.AuditQuerySchema, location="query")
@audit_api.response(200, schemas.AuditEventSchema(many=True))
@audit_api.paginate()
def list_audit(query: dict[str, Any], pagination_parameters: Any) -> list[Any]:
    """Who changed what and when, newest first (never secret values)."""
    statement = select(AuditEvent).order_by(AuditEvent.id.desc())
    if "action" in query:
        statement = statement.where(AuditEvent.action == query["action"])
    if "target_type" in query:
        statement = statement.where(AuditEvent.target_type == query["target_type"])
    return _paged(session(), statement, pagination_parameters)
