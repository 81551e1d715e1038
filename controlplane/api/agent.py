"""The agents' API: their desired state (ETag, long poll) and their status reports.

The hot path — an agent that is up to date asking again — is answered 304 from the
process's generation cache (:class:`~controlplane.api.longpoll.WakeHub`, else Redis) and
an in-process token cache, without a database query. These views are a plain Flask
blueprint for that reason (no schema is dumped on the way out); :func:`document` adds
them to the OpenAPI document by hand.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from marshmallow import Schema, fields
from redis import Redis

from contracts.agentwire import AgentReport, WireError
from controlplane import metrics, schemas
from controlplane.api.auth import current_host, require_host
from controlplane.api.longpoll import WakeHub
from controlplane.api.requestdb import session
from controlplane.crypto import SecretBox
from controlplane.errors import Malformed, NotFound
from controlplane.models import Host
from controlplane.services import agentreports, envlogs, generations, snapshots
from controlplane.settings import Settings

blueprint = Blueprint("agent", __name__, url_prefix="/v1/agent")
MAX_WAIT = 60


def _redis() -> Redis:
    client: Redis = current_app.extensions["portside.redis"]
    return client


def _presented_generation() -> int | None:
    raw = (request.headers.get("If-None-Match") or "").strip()
    raw = raw.removeprefix("W/").strip('"')
    return int(raw) if raw.isdigit() else None


def _wake_hub() -> WakeHub:
    hub: WakeHub = current_app.extensions["portside.wake_hub"]
    return hub


def _generation(host_id: int, *, release: bool = False) -> int:
    """The host's generation: from this process's cache, else Redis, else the database;
    ``release`` gives the database connection back at once (a waiting poll holds none)."""
    return _wake_hub().generation(host_id, lambda: _stored_generation(host_id, release))


def _stored_generation(host_id: int, release: bool) -> int:
    """The host's generation from Redis, else from the database (and then cached)."""
    cached = generations.cached_generation(_redis(), host_id)
    if cached is not None:
        return cached
    db = session()
    try:
        host = db.get(Host, host_id)
    finally:
        if release:
            db.close()
    if host is None:
        raise NotFound("this host no longer exists")
    generations.remember_generation(_redis(), host_id, host.generation)
    return host.generation


def _wait_for_change(host_id: int, seen: int, seconds: float) -> int:
    """The host's generation, once it differs from ``seen`` or ``seconds`` passed (no
    Redis or database connection is held meanwhile: see :mod:`controlplane.api.longpoll`)."""
    return _wake_hub().wait(host_id, seen, seconds, lambda: _generation(host_id, release=True))


def _not_modified(generation: int) -> Response:
    metrics.count_poll(304)
    response = Response(status=304)
    response.headers["ETag"] = f'"{generation}"'
    return response


@blueprint.get("/desired-state")
@require_host
def desired_state() -> Response:
    host_id = current_host().host_id
    wait = request.args.get("wait", "0")
    if not wait.isdigit():
        raise Malformed("wait must be a number of seconds")
    presented = _presented_generation()
    if presented is not None and int(wait) > 0:
        session().close()  # hold no database connection while waiting
        generation = _wait_for_change(host_id, presented, min(int(wait), MAX_WAIT))
    else:
        generation = _generation(host_id)
    if presented == generation:
        return _not_modified(generation)
    db = session()
    host = db.get(Host, host_id)
    if host is None:
        raise NotFound("this host no longer exists")
    settings: Settings = current_app.extensions["portside.settings"]
    state = snapshots.snapshot(db, SecretBox.from_settings(settings), host, settings.registry)
    if host.generation != generation:  # else Redis told us, or was told when we asked
        generations.remember_generation(_redis(), host_id, host.generation)
    metrics.count_poll(200)
    response = jsonify(state.to_json())
    response.headers["ETag"] = f'"{host.generation}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.post("/status")
@require_host
def status() -> tuple[str, int]:
    try:
        report = AgentReport.from_json(request.get_json(silent=True))
    except WireError as exc:
        raise Malformed(str(exc)) from None
    db = session()
    host = db.get(Host, current_host().host_id, with_for_update=True)
    if host is None:
        raise NotFound("this host no longer exists")
    agentreports.record_status(db, host, report)
    db.commit()
    return "", 204


@blueprint.post("/logs")
@require_host
def logs() -> tuple[str, int]:
    """A batch of what the host's containers printed (:mod:`hostagent.logship`)."""
    batch = request.get_json(silent=True)
    if not isinstance(batch, dict):
        raise Malformed("a log batch must be a JSON object")
    db = session()
    host = db.get(Host, current_host().host_id)
    if host is None:
        raise NotFound("this host no longer exists")
    settings: Settings = current_app.extensions["portside.settings"]
    envlogs.append(db, _redis(), settings, host, batch)
    return "", 204


class RoutingSchema(Schema):
    entrypoint = fields.String()
    cert_resolver = fields.String(allow_none=True)


class DesiredStateSchema(Schema):
    """Documentation only: the snapshot is a :class:`contracts.agentwire.DesiredState`
    sent with ``jsonify`` (its ``to_json``)."""

    host = fields.String()
    generation = fields.Integer()
    complete = fields.Boolean()
    routing = fields.Nested(RoutingSchema)
    environments = fields.List(
        fields.Dict(),
        metadata={"description": "each environment to run: its containers, routes, secrets"},
    )
    withheld = fields.List(
        fields.Dict(),
        metadata={
            "description": "environments the control plane could not render, as {name, "
            "reason}: the agent keeps what runs for them, never tears them down, and does "
            "not report them (they are refused, with the reason)"
        },
    )


class EnvironmentStatusSchema(Schema):
    name = fields.String(required=True)
    deployment_id = fields.Integer()
    state = fields.String(
        required=True, metadata={"description": "running, starting, failed, refused, removed"}
    )
    healthy = fields.Boolean()
    address = fields.String(allow_none=True)
    error = fields.String(allow_none=True)


class StatusReportSchema(Schema):
    agent_version = fields.String()
    generation = fields.Integer(
        required=True, metadata={"description": "the generation the agent applied"}
    )
    environments = fields.List(fields.Nested(EnvironmentStatusSchema))


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schemas.ApiErrorSchema}},
    }


def document(spec: APISpec, app: Flask) -> None:
    """Add the agent endpoints to the OpenAPI document (call after the Api exists)."""
    rules = {rule.endpoint: rule for rule in app.url_map.iter_rules()}
    auth_errors = {
        "401": _error("no valid token"),
        "403": _error("not the token of a host"),
        "404": _error("the token's host no longer exists"),
    }
    spec.path(
        rule=rules[f"{blueprint.name}.desired_state"],
        operations={
            "get": {
                "tags": ["agent"],
                "summary": "The host's desired state, a full snapshot versioned by its ETag",
                "description": (
                    "Send the last ETag in `If-None-Match`: 304 when nothing changed. With "
                    f"`wait` (seconds, at most {MAX_WAIT}) the request is held until the "
                    "generation moves or the time is up. Needs the host's own token."
                ),
                "parameters": [
                    {
                        "in": "query",
                        "name": "wait",
                        "schema": {"type": "integer", "minimum": 0},
                        "description": "long poll for up to this many seconds",
                    },
                    {
                        "in": "header",
                        "name": "If-None-Match",
                        "schema": {"type": "string"},
                        "description": "the ETag (generation) the agent has",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the snapshot",
                        "headers": {"ETag": {"schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": DesiredStateSchema}},
                    },
                    "304": {
                        "description": "unchanged since the presented ETag",
                        "headers": {"ETag": {"schema": {"type": "string"}}},
                    },
                    "400": _error("wait is not a number of seconds"),
                    **auth_errors,
                    "default": "DEFAULT_ERROR",
                },
            }
        },
    )
    spec.path(
        rule=rules[f"{blueprint.name}.status"],
        operations={
            "post": {
                "tags": ["agent"],
                "summary": "Report what the host runs; healthy deployments become active",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": StatusReportSchema}},
                },
                "responses": {
                    "204": {"description": "recorded"},
                    "400": _error("the report breaks the contract; the message names the field"),
                    **auth_errors,
                    "default": "DEFAULT_ERROR",
                },
            }
        },
    )
    spec.path(
        rule=rules[f"{blueprint.name}.logs"],
        operations={
            "post": {
                "tags": ["agent"],
                "summary": "What the host's containers printed, for the environments' logs",
                "description": (
                    "`{entries: [{environment, service, kind, container, stream, time, "
                    "line}], dropped: n}`; lines of environments not on the host are ignored."
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "204": {"description": "stored"},
                    "400": _error("the batch is not {entries: [...], dropped: n}"),
                    **auth_errors,
                    "default": "DEFAULT_ERROR",
                },
            }
        },
    )
