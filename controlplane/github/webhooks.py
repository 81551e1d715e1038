"""Webhook deliveries, sans I/O: verify a signature and parse headers + raw body.

Nothing here knows Flask; the view hands in the raw body and the headers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from controlplane.errors import Malformed

SIGNATURE_HEADER = "X-Hub-Signature-256"
# The headers :func:`parse` reads (any other is ignored).
DELIVERY_HEADERS = ("X-GitHub-Delivery", "X-GitHub-Event", "X-GitHub-Hook-ID")
MAX_GUID_LENGTH = 64


def signature(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """True when ``header`` is the HMAC-SHA256 of ``body``; compared in constant time."""
    if not header or not secret or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(signature(body, secret).encode(), header.strip().encode())


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """A verified delivery, with the routing keys taken from its payload."""

    guid: str
    event: str
    action: str | None
    hook_id: str | None
    payload: dict[str, Any]
    installation_id: int | None
    repository_id: int | None
    repository_full_name: str | None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(headers: Mapping[str, str], body: bytes) -> Delivery:
    """Parse a delivery whose signature was already verified; Malformed when malformed."""
    headers = {name.lower(): value for name, value in headers.items()}
    guid = (headers.get("x-github-delivery") or "").strip()
    event = (headers.get("x-github-event") or "").strip()
    if not guid or not event:
        raise Malformed("X-GitHub-Delivery and X-GitHub-Event are required")
    if len(guid) > MAX_GUID_LENGTH or len(event) > 64:
        raise Malformed("X-GitHub-Delivery or X-GitHub-Event is too long")
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise Malformed("the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise Malformed("the body is not a JSON object")
    action = payload.get("action")
    installation = payload.get("installation")
    repository = payload.get("repository")
    return Delivery(
        guid=guid,
        event=event,
        action=action if isinstance(action, str) else None,
        hook_id=headers.get("x-github-hook-id"),
        payload=payload,
        installation_id=_int_or_none(installation.get("id"))
        if isinstance(installation, dict)
        else None,
        repository_id=_int_or_none(repository.get("id")) if isinstance(repository, dict) else None,
        repository_full_name=repository.get("full_name")
        if isinstance(repository, dict) and isinstance(repository.get("full_name"), str)
        else None,
    )
