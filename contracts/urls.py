"""Which control-plane URLs a worker or an agent may send its secrets to."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

ALLOW_INSECURE_VARIABLE = "PORTSIDE_ALLOW_INSECURE_URL"


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: traffic that never leaves the machine."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_refusal(url: str, *, allow_insecure: bool) -> str | None:
    """Why a process holding secrets must not talk to ``url``, or None: over plain
    http:// to a host that is not loopback, its token and every credential it fetches
    would cross the network unencrypted, unless the operator said so
    (PORTSIDE_ALLOW_INSECURE_URL=1). One line, for a log or a terminal."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and allow_insecure):
        return None
    if parts.scheme != "http":
        return f"PORTSIDE_URL must be an http:// or https:// URL, got {url!r}"
    if is_loopback(parts.hostname or ""):
        return None
    return (
        f"PORTSIDE_URL is plain http:// to {parts.hostname}, which is not loopback; "
        f"use https:// or set {ALLOW_INSECURE_VARIABLE}=1"
    )
