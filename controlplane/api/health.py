"""Liveness and readiness: /healthz says the process is up, /readyz that it can work."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from controlplane.db import Database

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    database: Database = current_app.extensions["portside.db"]
    redis_client: Redis = current_app.extensions["portside.redis"]
    checks: dict[str, str] = {}
    try:
        database.ping()
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"down: {exc.__class__.__name__}"
    try:
        redis_client.ping()
        checks["redis"] = "ok"
    except RedisError as exc:
        checks["redis"] = f"down: {exc.__class__.__name__}"
    down = sorted(name for name, state in checks.items() if state != "ok")
    if down:
        return jsonify(status="unavailable", down=down, checks=checks), 503
    return jsonify(status="ok", checks=checks), 200
