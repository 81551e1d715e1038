"""The control plane's exceptions: one root, transient vs permanent below it.

Only :class:`TransientError` is worth retrying. :class:`ApiError` subclasses carry the
HTTP status they map to; ``controlplane.api.errors`` turns them into JSON.
"""

from __future__ import annotations


class PortsideError(Exception):
    """Root of every error the control plane raises on purpose."""


class ConfigError(PortsideError):
    """A setting is missing or malformed; the process cannot start."""


class TransientError(PortsideError):
    """Something outside us failed for now (database, Redis, GitHub); retry later."""


class PermanentError(PortsideError):
    """Retrying cannot help: bad input, missing record, refused by GitHub."""


class ApiError(PermanentError):
    """An error with an HTTP status and a short machine-readable code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class ValidationFailed(ApiError):
    status = 422
    code = "validation_failed"


class ServiceUnavailable(ApiError):
    status = 503
    code = "unavailable"


class ComposeRefusedError(ValidationFailed):
    """A build's uploaded compose file or images broke the policy: the build failed and its
    environment was refused (recorded before this is answered)."""

    code = "compose_refused"
