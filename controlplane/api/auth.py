"""Bearer-token authentication for the API: 401 without a valid token, 403 out of scope."""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from flask import g, request

from controlplane.db import session
from controlplane.errors import Forbidden, Unauthorized
from controlplane.models import ApiToken
from controlplane.services import tokens

P = ParamSpec("P")
R = TypeVar("R")


def current_token() -> ApiToken:
    token: ApiToken = g.api_token
    return token


def actor() -> str:
    """How the audit log names whoever makes the current request."""
    token = current_token()
    return f"token:{token.name}"


def _authenticate() -> ApiToken:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("a bearer token is required")
    token = tokens.authenticate(session(), presented.strip())
    if token is None:
        raise Unauthorized("the token is invalid or revoked")
    return token


@dataclass(frozen=True, slots=True)
class HostIdentity:
    token_id: int
    host_id: int
    name: str


class _HostTokenCache:
    """Agents poll often: their tokens are checked against the database at most every
    TTL seconds per process (a revoked host token keeps working for at most that long)."""

    TTL = 15.0
    LIMIT = 50_000

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[float, HostIdentity]] = {}
        self._lock = threading.Lock()

    def get(self, presented: str) -> HostIdentity:
        key = hashlib.sha256(presented.encode()).digest()
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        token = tokens.authenticate(session(), presented)
        if token is None:
            raise Unauthorized("the token is invalid or revoked")
        if token.scope != "host" or token.host_id is None:
            raise Forbidden("this needs the token of a host")
        identity = HostIdentity(token.id, token.host_id, token.name)
        with self._lock:
            if len(self._entries) >= self.LIMIT:
                self._entries.clear()
            self._entries[key] = (now + self.TTL, identity)
        return identity


_host_tokens = _HostTokenCache()


def current_host() -> HostIdentity:
    """The host whose agent makes this request (set by :func:`require_host`)."""
    identity: HostIdentity = g.host_identity
    return identity


def require_host(view: Callable[P, R]) -> Callable[P, R]:
    """Allow only a host's own token; the host is taken from the token, never the request."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized("a bearer token is required")
        g.host_identity = _host_tokens.get(presented.strip())
        return view(*args, **kwargs)

    return wrapper


def require(*scopes: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Allow tokens of ``scopes``; an admin token is allowed everywhere but agent routes."""

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            token = _authenticate()
            allowed = set(scopes)
            if "host" not in allowed:
                allowed.add("admin")
            if token.scope not in allowed:
                raise Forbidden(f"this needs a token of scope {' or '.join(sorted(allowed))}")
            g.api_token = token
            return view(*args, **kwargs)

        return wrapper

    return decorator
