"""The agents' API: their desired state (ETag, long poll) and their status reports.

The hot path — an agent that is up to date asking again — is answered 304 from Redis
and an in-process token cache, without a database query.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from redis import Redis
from redis.exceptions import RedisError

from controlplane.api.auth import current_host, require_host
from controlplane.crypto import SecretBox
from controlplane.db import session
from controlplane.errors import BadRequest, NotFound
from controlplane.models import Host
from controlplane.services import desired
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


def _generation(host_id: int) -> int:
    cached = desired.cached_generation(_redis(), host_id)
    if cached is not None:
        return cached
    host = session().get(Host, host_id)
    if host is None:
        raise NotFound("this host no longer exists")
    desired.remember_generation(_redis(), host_id, host.generation)
    return host.generation


def _wait_for_change(host_id: int, seen: int, seconds: float) -> int:
    """Hold the request until the host's generation moves or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    try:
        pubsub = _redis().pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(desired.wake_channel(host_id))
    except RedisError:
        return seen
    try:
        # Re-check after subscribing: a change just before would otherwise be missed.
        current = _generation(host_id)
        while current == seen and (left := deadline - time.monotonic()) > 0:
            pubsub.get_message(timeout=min(left, 5.0))
            current = _generation(host_id)
        return current
    except RedisError:
        return seen
    finally:
        pubsub.close()


def _not_modified(generation: int) -> Response:
    response = Response(status=304)
    response.headers["ETag"] = f'"{generation}"'
    return response


@blueprint.get("/desired-state")
@require_host
def desired_state() -> Response:
    host_id = current_host().host_id
    wait = request.args.get("wait", "0")
    if not wait.isdigit():
        raise BadRequest("wait must be a number of seconds")
    presented = _presented_generation()
    generation = _generation(host_id)
    if presented is not None and presented == generation:
        if int(wait) > 0:
            session().close()  # hold no database connection while waiting
            generation = _wait_for_change(host_id, generation, min(int(wait), MAX_WAIT))
        if presented == generation:
            return _not_modified(generation)
    db = session()
    host = db.get(Host, host_id)
    if host is None:
        raise NotFound("this host no longer exists")
    settings: Settings = current_app.extensions["portside.settings"]
    state: dict[str, Any] = desired.snapshot(
        db, SecretBox.from_settings(settings), host, settings.registry
    )
    desired.remember_generation(_redis(), host_id, host.generation)
    response = jsonify(state)
    response.headers["ETag"] = f'"{host.generation}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.post("/status")
@require_host
def status() -> tuple[str, int]:
    report = request.get_json(silent=True)
    if not isinstance(report, dict) or not isinstance(report.get("environments", []), list):
        raise BadRequest("the status report must be a JSON object with an environments list")
    db = session()
    host = db.get(Host, current_host().host_id, with_for_update=True)
    if host is None:
        raise NotFound("this host no longer exists")
    desired.record_status(db, host, report)
    db.commit()
    return "", 204
