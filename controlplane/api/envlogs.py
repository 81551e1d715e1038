"""``GET /v1/environments/<id>/logs``: the recent runtime output of an environment, as
JSON or followed as server-sent events (:mod:`controlplane.services.envlogs`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Response, current_app, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from redis import Redis

from controlplane.api.auth import require
from controlplane.api.requestdb import session
from controlplane.api.sse import event_stream
from controlplane.errors import NotFound
from controlplane.models import Environment
from controlplane.services import envlogs

blueprint = Blueprint(
    "environment_logs",
    __name__,
    url_prefix="/v1/environments",
    description="Runtime logs of environments",
)


class EnvironmentLogsQuerySchema(Schema):
    since = fields.AwareDateTime(
        default_timezone=dt.UTC, metadata={"description": "lines received at or after this time"}
    )
    tail = fields.Integer(
        validate=validate.Range(min=1, max=envlogs.MAX_ENTRIES),
        metadata={"description": "only the last this many lines"},
    )
    service = fields.String(metadata={"description": "a compose service's lines only"})


class EnvironmentLogLineSchema(Schema):
    id = fields.String(metadata={"description": "the line's stream id (Last-Event-ID)"})
    service = fields.String(metadata={"description": "the compose service, empty otherwise"})
    kind = fields.String()
    container = fields.String()
    stream = fields.String(metadata={"description": "stdout, stderr, or agent"})
    time = fields.String(metadata={"description": "when the container printed it"})
    line = fields.String()


class EnvironmentLogsSchema(Schema):
    environment_id = fields.Integer()
    lines = fields.List(fields.Nested(EnvironmentLogLineSchema))


@blueprint.get("/<int:environment_id>/logs")
@require("read")
@blueprint.arguments(EnvironmentLogsQuerySchema, location="query")
@blueprint.response(200, EnvironmentLogsSchema)
@blueprint.doc(
    description="The environment's recent output (secrets masked), oldest first. With "
    "`Accept: text/event-stream`, follows new lines (each a JSON object) with keep-alive "
    "comments; `Last-Event-ID` resumes after a line."
)
def environment_logs(query: dict[str, Any], environment_id: int) -> Any:
    if session().get(Environment, environment_id) is None:
        raise NotFound(f"environment {environment_id} does not exist")
    if request.accept_mimetypes.best == "text/event-stream":
        return follow(environment_id, request.headers.get("Last-Event-ID"), query.get("service"))
    redis: Redis = current_app.extensions["portside.redis"]
    return {"environment_id": environment_id, "lines": envlogs.read(redis, environment_id, **query)}


def follow(environment_id: int, after: str | None, service: str | None) -> Response:
    """The environment's lines as server-sent events, after ``after`` (a Last-Event-ID) or
    from now on: this endpoint's stream, which the dashboard's log pane follows too."""
    return event_stream(
        lambda streams: envlogs.events(streams, environment_id, after, service or None)
    )
