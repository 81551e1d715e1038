"""Helpers for tests: GitHub's real payloads and the headers it sends with them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from controlplane.github.webhooks import signature

SHARED = Path(__file__).resolve().parents[2] / "shared"
PAYLOADS = SHARED / "github" / "payloads"
WEBHOOK_SECRET = "portside-test-webhook-secret"


def load_payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def webhook_headers(
    event: str, body: bytes, guid: str | None = None, secret: str = WEBHOOK_SECRET
) -> dict[str, str]:
    """The headers GitHub sends with a delivery, signed with ``secret``."""
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": guid or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "123456",
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-GitHub-Hook-Installation-Target-ID": "4242",
        "X-Hub-Signature-256": signature(body, secret),
        "User-Agent": "GitHub-Hookshot/044aadd",
        "Content-Type": "application/json",
    }


def event_of(payload_name: str) -> str:
    return payload_name.split("__", 1)[0]


def payload_names() -> list[str]:
    return sorted(path.name for path in PAYLOADS.glob("*.json"))


def json_payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(load_payload(name))
    return data
