"""The one place where exceptions become ``{"error": ..., "message": ...}`` JSON."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from controlplane.errors import (
    Conflict,
    DomainError,
    Malformed,
    NotFound,
    NotPermitted,
    TemporarilyUnavailable,
    TooLarge,
    Unauthenticated,
    ValidationFailed,
)

log = logging.getLogger(__name__)

# The one place a domain error becomes an HTTP status; a subclass answers as its nearest
# listed ancestor (a refused compose file is a 422 like any failed validation).
HTTP_STATUS: dict[type[DomainError], int] = {
    DomainError: 400,
    Malformed: 400,
    Unauthenticated: 401,
    NotPermitted: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    ValidationFailed: 422,
    TemporarilyUnavailable: 503,
}


def http_status(exc: DomainError) -> int:
    """The status a domain error answers with."""
    return next(HTTP_STATUS[cls] for cls in type(exc).__mro__ if cls in HTTP_STATUS)


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    """The error body; made without an app context, so the plain WSGI webhook endpoint
    answers in the same shape as the Flask app."""
    body: dict[str, Any] = {"error": code, "message": message}
    if details is not None:
        body["details"] = details
    return Response(json.dumps(body, separators=(",", ":")), status, mimetype="application/json")


def _code_for(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        422: "validation_failed",
        429: "too_many_requests",
        503: "unavailable",
    }.get(status, "error")


def exception_response(exc: Exception) -> Response:
    """The JSON answer to any exception a request raised."""
    if isinstance(exc, DomainError):
        return error_response(http_status(exc), exc.code, exc.message, exc.details)
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        details = None
        data = getattr(exc, "data", None)
        if isinstance(data, dict) and "messages" in data:
            # flask-smorest's validation failures carry the fields at fault.
            details = data["messages"]
        message = exc.description or exc.name
        if status == 422 and details is not None:
            message = "the request has invalid fields"
        return error_response(status, _code_for(status), message, details)
    if isinstance(exc, PoolTimeout):
        # Every database connection of this process is busy (a storm of agents fetching
        # snapshots): a retryable answer, not an internal error.
        log.warning("database connection pool exhausted")
        return error_response(503, "unavailable", "the server is busy, try again")
    if isinstance(exc, OperationalError):
        log.error("database unavailable: %s", exc.orig.__class__.__name__)
        return error_response(503, "unavailable", "the database is unavailable, try again")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return error_response(503, "unavailable", "the database is unavailable, try again")
    log.exception("unhandled error")
    return error_response(500, "internal_error", "an internal error occurred")


def register_error_handlers(app: Flask) -> None:
    # Each class by name: flask-smorest registers an HTTPException handler of its own.
    for handled in (DomainError, HTTPException, DBAPIError, Exception):
        app.register_error_handler(handled, exception_response)
