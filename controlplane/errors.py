"""The control plane's exceptions: one root, transient vs permanent below it.

Only :class:`TransientError` is worth retrying. :class:`DomainError` subclasses name what
was refused and carry no HTTP status: ``controlplane.api.errors`` holds the one table from
class to status and turns them into JSON.
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


class DomainError(PermanentError):
    """A request the domain refuses, with a short machine-readable ``code``; what that
    means in HTTP is decided by ``controlplane.api.errors``, not here."""

    code = "bad_request"

    def __init__(self, message: str, *, details: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Malformed(DomainError):
    """The input cannot be read at all (not the shape we expect)."""

    code = "bad_request"


class Unauthenticated(DomainError):
    """No credential, or one we do not know."""

    code = "unauthorized"


class NotPermitted(DomainError):
    """A known caller that may not do this."""

    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """Not possible in the record's current state."""

    code = "conflict"


class TooLarge(DomainError):
    code = "payload_too_large"


class ValidationFailed(DomainError):
    """Readable input that breaks a domain rule."""

    code = "validation_failed"


class TemporarilyUnavailable(DomainError):
    """Something we depend on cannot serve this now; asking again later may work."""

    code = "unavailable"


class ComposeRefusedError(ValidationFailed):
    """A build's uploaded compose file or images broke the policy: the build failed and its
    environment was refused (recorded before this is answered)."""

    code = "compose_refused"
