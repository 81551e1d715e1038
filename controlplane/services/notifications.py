"""Notifications: tell the people behind a service that a deploy succeeded or failed, and
that a preview is ready or was removed.

Each service has a list of targets: ``webhook`` (a JSON body signed like GitHub's
deliveries, HMAC-SHA256 of the body in ``X-Portside-Signature-256``) or ``slack`` (an
incoming-webhook ``{"text": ...}`` message). Sending happens in a control task after the
commit; a target that fails is retried there with backoff, and nothing here can block or
fail a deploy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.crypto import SecretBox
from controlplane.errors import NotFound, PermanentError, TransientError, ValidationFailed
from controlplane.models import (
    NOTIFICATION_KINDS,
    Deployment,
    Environment,
    NotificationTarget,
    utcnow,
)
from controlplane.services import audit
from controlplane.services.catalog import get_service
from controlplane.statuses import NotificationKind

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Portside-Signature-256"
EVENT_HEADER = "X-Portside-Event"
DELIVERY_HEADER = "X-Portside-Delivery"
USER_AGENT = "Portside-Notifications/1"
TIMEOUT = 10.0
# The events a target receives, by the name in the payload's ``event`` field.
EVENTS = ("deploy.succeeded", "deploy.failed", "preview.ready", "preview.removed")
NOTIFICATION_NAMESPACE = uuid.UUID("6f1c1f43-55a4-4c8e-9d0a-2b9f5b2c6a11")


class NotificationFailed(TransientError):
    """A target did not accept a message (unreachable, timeout, 5xx); tried again later."""


@dataclass(frozen=True, slots=True)
class Message:
    """One event, ready to send: the JSON document and its one-line summary for Slack."""

    service_id: int
    event: str
    payload: dict[str, Any]
    text: str


def signature(body: bytes, secret: str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body, as GitHub signs its deliveries."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """What a receiver does: compare the header with the body's signature in constant time."""
    return bool(header) and hmac.compare_digest(signature(body, secret), str(header))


# -- targets --------------------------------------------------------------------------------


def _check_url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2048:
        raise ValidationFailed(
            "not a notification URL", details={"url": ["an http:// or https:// URL"]}
        )
    return url


def add_target(
    session: Session,
    box: SecretBox,
    service_id: int,
    *,
    kind: str,
    url: str,
    secret: str | None,
    actor: str,
) -> tuple[NotificationTarget, str | None]:
    """Add a target; a webhook without a secret gets a generated one, returned once."""
    service = get_service(session, service_id)
    if kind not in NOTIFICATION_KINDS:
        raise ValidationFailed(
            "unknown kind", details={"kind": [f"one of {', '.join(NOTIFICATION_KINDS)}"]}
        )
    url = _check_url(url)
    if kind == NotificationKind.WEBHOOK and not secret:
        secret = secrets.token_urlsafe(32)
    target = NotificationTarget(
        service_id=service.id,
        kind=kind,
        url=url,
        secret_encrypted=box.encrypt(secret) if secret else None,
    )
    session.add(target)
    session.flush()
    # Neither the URL (Slack's carries its credential) nor the secret goes to the audit log.
    audit.record(
        session, actor, "notification.add", "service", service.id, target=target.id, kind=kind
    )
    return target, secret if kind == NotificationKind.WEBHOOK else None


def list_targets(session: Session, service_id: int) -> list[NotificationTarget]:
    get_service(session, service_id)
    return list(
        session.scalars(
            select(NotificationTarget)
            .where(NotificationTarget.service_id == service_id)
            .order_by(NotificationTarget.id)
        )
    )


def delete_target(session: Session, service_id: int, target_id: int, actor: str) -> None:
    target = session.get(NotificationTarget, target_id)
    if target is None or target.service_id != service_id:
        raise NotFound(f"service {service_id} has no notification target {target_id}")
    session.delete(target)
    audit.record(session, actor, "notification.delete", "service", service_id, target=target_id)


def masked_url(url: str) -> str:
    """The URL without its path and query, which for Slack and others hold a credential."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…" if parts.path not in ("", "/") else url


# -- messages -------------------------------------------------------------------------------


def _environment_url(environment: Environment) -> str | None:
    if environment.domain:
        return f"https://{environment.domain}"
    if environment.address:
        address = environment.address
        return address if "://" in address else f"http://{address}"
    return None


def _environment_json(environment: Environment) -> dict[str, Any]:
    return {
        "id": environment.id,
        "name": environment.name,
        "kind": environment.kind,
        "url": _environment_url(environment),
        "pull_request": environment.pr_number,
        "branch": environment.branch,
    }


def _deployment_message(session: Session, event: str, deployment_id: int) -> Message | None:
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        return None
    environment = deployment.environment
    build = deployment.build
    service = environment.service
    preview = environment.kind == "preview"
    if event == "deployment_active":
        name = "preview.ready" if preview else "deploy.succeeded"
    else:
        name = "deploy.failed"
    short = build.commit_sha[:7]
    url = _environment_url(environment)
    if name == "preview.ready":
        text = f"Preview {environment.name} of {service.name} is ready ({short})"
    elif name == "deploy.succeeded":
        text = f"Deployed {service.name} {short} to {environment.name}"
    else:
        text = f"Deploy of {service.name} {short} to {environment.name} failed"
    text += f": {url}" if url and name != "deploy.failed" else ""
    if name == "deploy.failed" and deployment.error:
        text += f"\n> {deployment.error.splitlines()[0][:300]}"
    payload = {
        "event": name,
        "service": {"id": service.id, "name": service.name},
        "environment": _environment_json(environment),
        "deployment": {
            "id": deployment.id,
            "status": deployment.status,
            "error": deployment.error,
            "activated_at": deployment.activated_at.isoformat()
            if deployment.activated_at
            else None,
        },
        "build": {
            "id": build.id,
            "commit_sha": build.commit_sha,
            "branch": build.branch,
            "author": build.author,
            "commit_message": build.commit_message,
        },
    }
    return Message(service.id, name, payload, text)


def _removed_message(session: Session, environment_id: int) -> Message | None:
    environment = session.get(Environment, environment_id)
    if environment is None:
        return None
    service = environment.service
    reason = environment.closed_reason or "removed"
    payload = {
        "event": "preview.removed",
        "service": {"id": service.id, "name": service.name},
        "environment": _environment_json(environment),
        "reason": reason,
        "removed_by": environment.closed_by,
    }
    text = f"Preview {environment.name} of {service.name} was removed ({reason})"
    return Message(service.id, "preview.removed", payload, text)


def message_for(session: Session, event: str, object_id: int) -> Message | None:
    """The message of a noted event (``deployment_active``, ``deployment_failed``: a
    deployment id; ``preview_removed``: an environment id); None when there is none."""
    if event in ("deployment_active", "deployment_failed"):
        return _deployment_message(session, event, object_id)
    if event == "preview_removed":
        return _removed_message(session, object_id)
    raise PermanentError(f"unknown notification event {event!r}")


# -- sending --------------------------------------------------------------------------------


def delivery_id(event: str, object_id: int, target_id: int) -> str:
    """The same for every retry of one message to one target, so receivers can dedupe."""
    return str(uuid.uuid5(NOTIFICATION_NAMESPACE, f"{event}:{object_id}:{target_id}"))


def request_for(
    message: Message, target: NotificationTarget, box: SecretBox, delivery: str
) -> tuple[bytes, dict[str, str]]:
    """The exact body and headers sent to ``target``."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if target.kind == NotificationKind.SLACK:
        return json.dumps({"text": message.text}).encode(), headers
    document = {**message.payload, "delivery": delivery, "sent_at": utcnow().isoformat()}
    body = json.dumps(document, sort_keys=True, default=str).encode()
    headers[EVENT_HEADER] = message.event
    headers[DELIVERY_HEADER] = delivery
    if target.secret_encrypted:
        headers[SIGNATURE_HEADER] = signature(body, box.decrypt(target.secret_encrypted))
    return body, headers


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = TIMEOUT) -> None:
    """POST once; any answer but 2xx is a failure worth trying again (4xx too: a
    receiver being redeployed often answers 404 for a moment)."""
    try:
        response = requests.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        )
    except requests.RequestException as exc:
        raise NotificationFailed(f"{masked_url(url)}: {exc.__class__.__name__}") from None
    if not 200 <= response.status_code < 300:
        raise NotificationFailed(f"{masked_url(url)} answered {response.status_code}")


def send(
    session: Session,
    box: SecretBox,
    event: str,
    object_id: int,
    *,
    target_ids: list[int] | None = None,
    timeout: float = TIMEOUT,
) -> list[int]:
    """Send an event's message to the service's targets (or only ``target_ids``); return
    the ids of the targets that failed, for the caller to try again later."""
    message = message_for(session, event, object_id)
    if message is None:
        return []
    query = select(NotificationTarget).where(NotificationTarget.service_id == message.service_id)
    if target_ids is not None:
        query = query.where(NotificationTarget.id.in_(target_ids))
    failed: list[int] = []
    for target in session.scalars(query.order_by(NotificationTarget.id)):
        body, headers = request_for(message, target, box, delivery_id(event, object_id, target.id))
        try:
            post(target.url, body, headers, timeout)
        except NotificationFailed as exc:
            log.warning("notification %s to target %s failed: %s", message.event, target.id, exc)
            failed.append(target.id)
    return failed
