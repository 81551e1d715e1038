"""The build workers' side of the API: claim and finish steps, fetch short-lived
credentials, upload artifacts, record deployments; plus build logs for everyone."""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Response, current_app, request
from flask_smorest import Blueprint, Page
from redis import Redis
from sqlalchemy import select

from contracts.steps import Step
from controlplane import schemas
from controlplane.api.auth import actor, current_token, require
from controlplane.api.requestdb import session
from controlplane.api.sse import event_stream
from controlplane.crypto import SecretBox
from controlplane.errors import ComposeRefusedError, TemporarilyUnavailable
from controlplane.models import Build, Variable
from controlplane.services import appsetup, builds, gates, gitsources, logs, registries, stepclaims
from controlplane.services.artifacts import record_artifacts
from controlplane.services.deployments import deployments_of, record_deployment
from controlplane.settings import Settings
from controlplane.statuses import VariableKind, VariableScope

worker_api = Blueprint(
    "pipeline", __name__, url_prefix="/v1/builds", description="Build workers and build logs"
)
deployments_api = Blueprint(
    "deployments", __name__, url_prefix="/v1/services", description="Deployments of a service"
)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["portside.settings"]
    return settings


def _redis() -> Redis:
    client: Redis = current_app.extensions["portside.redis"]
    return client


def _box() -> SecretBox:
    return SecretBox.from_settings(_settings())


def _build_args(build_id: int) -> dict[str, str]:
    """The service's build arguments for the worker holding the build step; a fork's
    build gets none marked secret."""
    build = stepclaims.held_build(session(), build_id, current_token().id)
    environment = build.environment
    untrusted = environment.from_fork and not environment.secrets_approved_for(build.commit_sha)
    box = _box()
    rows = session().scalars(
        select(Variable).where(
            Variable.service_id == build.service_id,
            Variable.kind == VariableKind.BUILD,
            Variable.environment_id.is_(None),
            Variable.scope.in_((VariableScope.ALL, environment.kind)),
        )
    )
    return {
        row.name: box.decrypt(row.value_encrypted)
        for row in rows
        if not (untrusted and row.is_secret)
    }


def _end(build_id: int) -> None:
    """Close the live log and keep its text with the build."""
    build = builds.get_build(session(), build_id)
    logs.close(_redis(), build_id)
    logs.persist(session(), _redis(), build)


@worker_api.post("/<int:build_id>/steps/<step>/claim")
@require("worker")
@worker_api.arguments(schemas.StepClaimSchema)
@worker_api.response(200, schemas.ClaimedStepSchema)
@worker_api.alt_response(403, schema=schemas.ApiErrorSchema, description="not this token's lane")
@worker_api.alt_response(409, schema=schemas.ApiErrorSchema, description="must not run")
def claim_step(data: dict[str, Any], build_id: int, step: str) -> dict[str, Any]:
    db = session()
    spec = stepclaims.claim_step(
        db, build_id, step, data["attempt"], data["worker"], token=current_token()
    )
    db.commit()
    return _claim_body(spec)


def _claim_body(spec: stepclaims.ClaimedStep) -> dict[str, Any]:
    """A claimed step with the secrets it needs and nothing more: the build step gets the
    service's build arguments, build and push the registry's push credentials."""
    body = dataclasses.asdict(spec)
    body["build_args"] = _build_args(spec.build_id) if spec.step == Step.BUILD else {}
    body["registry_auth"] = None
    if spec.step in (Step.BUILD, Step.PUSH):
        credentials = _registry_credentials(spec.build_id)
        if credentials.username:
            body["registry_auth"] = {
                "username": credentials.username,
                "password": credentials.password or "",
            }
    return body


@worker_api.post("/<int:build_id>/steps/<step>/finish")
@require("worker")
@worker_api.arguments(schemas.StepResultSchema)
@worker_api.response(204)
@worker_api.alt_response(
    200, schema=schemas.StepFinishedSchema, description="with ``worker``: the next step, claimed"
)
@worker_api.alt_response(403, schema=schemas.ApiErrorSchema, description="not this token's build")
@worker_api.alt_response(409, schema=schemas.ApiErrorSchema, description="must not run")
@worker_api.alt_response(422, schema=schemas.ApiErrorSchema, description="artifacts refused")
def finish_step(data: dict[str, Any], build_id: int, step: str) -> Any:
    """End a step; upload_compose may carry its ``artifacts``, and record_deployment's
    finish deploys the build. With ``worker``, the answer claims the next step for it."""
    db = session()
    try:
        ended = stepclaims.end_step(
            db,
            build_id,
            step,
            data["attempt"],
            token=current_token(),
            succeeded=data["status"] == "succeeded",
            error=data["error"],
            worker=data["worker"],
            artifacts=data["artifacts"],
            registry=_settings().registry,
            actor=actor(),
        )
    except ComposeRefusedError:
        _end(build_id)
        db.commit()  # the failed build and the refused environment are kept; then 422
        raise
    build = ended.build
    if build.status in builds.FINISHED or build.status in gates.HELD:
        _end(build_id)  # a held build's log is complete: its worker is done with it
    db.commit()
    if data["worker"] is None:
        return None
    deployment = (
        ended.deployment
        if ended.deployment is not None
        else _held(build)
        if step == Step.RECORD_DEPLOYMENT and build.status in gates.HELD
        else None
    )
    body = {
        "next": _claim_body(ended.next) if ended.next is not None else None,
        "deployment": deployment,
    }
    return schemas.StepFinishedSchema().dump(body), 200


@worker_api.post("/<int:build_id>/heartbeat")
@require("worker")
@worker_api.arguments(schemas.HeartbeatSchema)
@worker_api.response(204)
@worker_api.alt_response(403, schema=schemas.ApiErrorSchema, description="not this token's build")
@worker_api.alt_response(
    409, schema=schemas.ApiErrorSchema, description="stop: cancelled or taken over"
)
def heartbeat(data: dict[str, Any], build_id: int) -> None:
    """The running step is alive; 409 tells its worker to stop the build."""
    db = session()
    stepclaims.check_holder(db, build_id, data["attempt"], current_token().id)
    stepclaims.heartbeat(db, build_id, data["attempt"])
    db.commit()


@worker_api.post("/<int:build_id>/git-token")
@require("worker")
@worker_api.arguments(schemas.GitTokenQuerySchema, location="query")
@worker_api.response(200, schemas.GitTokenSchema)
def git_token(query: dict[str, Any], build_id: int) -> dict[str, Any]:
    """A fresh installation token for cloning this build's repository, read-only and for
    that repository alone, to the worker holding the build's step (never stored); for a
    git-URL service, its own token or SSH key (or none), to that worker alone too."""
    build = stepclaims.held_build(session(), build_id, current_token().id)
    if build.service.git_url is not None:
        auth = gitsources.auth_of(build.service, _box() if _settings().secret_key else None)
        return {
            "token": auth.token if auth else None,
            "ssh_key": auth.ssh_key if auth else None,
            "expires_in": None,
        }
    repository = build.service.repository
    github = appsetup.github_of(current_app.extensions)
    if github is None or repository is None:
        raise TemporarilyUnavailable("no GitHub App is configured for this repository")
    token = github.clone_token(
        repository.installation_id, repository.full_name, refresh=query["refresh"]
    )
    return {"token": token, "expires_in": 600}


@worker_api.get("/<int:build_id>/registry-credentials")
@require("worker")
@worker_api.response(200, schemas.RegistryCredentialsSchema)
def registry_credentials(build_id: int) -> dict[str, Any]:
    """The push credentials of the build's registry, to the worker holding its step."""
    credentials = _registry_credentials(build_id)
    return {
        "address": credentials.address,
        "username": credentials.username,
        "password": credentials.password,
    }


def _registry_credentials(build_id: int) -> registries.Credentials:
    build = stepclaims.held_build(session(), build_id, current_token().id)
    repository = build.service.repository
    return registries.credentials_for(
        session(),
        _box(),
        _settings().registry,
        repository.installation_id if repository else None,
    )


@worker_api.post("/<int:build_id>/artifacts")
@require("worker")
@worker_api.arguments(schemas.ArtifactsSchema)
@worker_api.response(204)
def upload_artifacts(data: dict[str, Any], build_id: int) -> None:
    """The worker holding the build's attempt only: another worker token (a fork's among
    them) must neither plant a compose file in it nor fail it with a bad upload."""
    db = session()
    stepclaims.check_holder(db, build_id, data["attempt"], current_token().id)
    try:
        record_artifacts(
            db,
            build_id,
            data["attempt"],
            data["images"],
            data["compose"],
            registry=_settings().registry,
            routed=data["routed_service"],
        )
    except ComposeRefusedError:
        _end(build_id)
        db.commit()  # the failed build and the refused environment are kept; then 422
        raise
    db.commit()


@deployments_api.post("/<int:service_id>/deployments")
@require("worker")
@deployments_api.arguments(schemas.DeploymentCreateSchema)
@deployments_api.response(201, schemas.DeploymentSchema)
@deployments_api.alt_response(
    202, schema=schemas.DeploymentSchema, description="held at a gate: no deployment yet"
)
def create_deployment(data: dict[str, Any], service_id: int) -> Any:
    """Deploy a finished build; or, when a gate holds it, 202 without a deployment id, with
    the build's status (``awaiting_checks``, ``awaiting_approval``) and why in ``error``."""
    db = session()
    build = builds.get_build(db, data["build_id"])
    # Only the worker that built it: another worker token (a fork's among them) may not
    # deploy builds it never held.
    stepclaims.check_holder(db, build.id, build.attempt, current_token().id)
    deployment = record_deployment(db, service_id, data["build_id"], actor())
    db.commit()
    if deployment is not None:
        return deployment
    held = {
        **_held(build),
        "environment_id": build.environment_id,
        "environment": {"name": build.environment.name},
        "build_id": build.id,
        "build": {"commit_sha": build.commit_sha},
    }
    return held, 202


def _held(build: Build) -> dict[str, Any]:
    """A build a gate holds, as the answer to recording its deployment: no id, why."""
    return {"id": None, "status": build.status, "error": build.environment.status_reason}


@deployments_api.get("/<int:service_id>/deployments")
@require("read")
@deployments_api.response(200, schemas.DeploymentSchema(many=True))
@deployments_api.paginate(Page)
def list_deployments(service_id: int) -> list[Any]:
    return deployments_of(session(), service_id)


@worker_api.get("/<int:build_id>/logs")
@require("read")
@worker_api.response(200, schemas.LogsSchema)
@worker_api.doc(
    description="With `Accept: text/event-stream`, follows the log until the build ends "
    "(`event: end` with its status), with keep-alive comments while it is quiet; "
    "`Last-Event-ID` resumes after an entry."
)
def build_logs(build_id: int) -> Any:
    build = builds.get_build(session(), build_id)
    if request.accept_mimetypes.best == "text/event-stream":
        return log_stream_response(build_id, request.headers.get("Last-Event-ID"))
    if build.status in builds.FINISHED and build.log is not None:
        lines = build.log.split("\n") if build.log else []
    else:
        lines = [line for _id, line in logs.read(_redis(), build_id) if line is not None]
    return {
        "build_id": build_id,
        "status": build.status,
        "complete": build.status in builds.FINISHED,
        "lines": lines,
    }


def log_stream_response(build_id: int, after: str | None) -> Response:
    """The build's log as server-sent events (the API's and the dashboard's stream)."""
    return event_stream(lambda streams: streams.events(build_id, after))
