"""Bearer-token authentication for the API: 401 without a valid token, 403 out of scope."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from flask import current_app, g, request
from redis import Redis
from redis.exceptions import RedisError

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
    """Agents poll often, so their tokens are checked against the database rarely: a
    verified host token is remembered in this process for LOCAL_TTL seconds and in Redis,
    shared by every web worker, for SHARED_TTL seconds (revoking through the API forgets
    it at once in Redis; other processes stop accepting it within LOCAL_TTL)."""

    LOCAL_TTL = 15.0
    SHARED_TTL = 600  # revoking deletes it at once; the TTL only tidies up
    LIMIT = 50_000

    def __init__(self) -> None:
        # presented token's SHA-256 → (expiry, identity, public id)
        self._entries: dict[bytes, tuple[float, HostIdentity, str]] = {}
        self._lock = threading.Lock()

    def get(self, presented: str, redis: Redis) -> HostIdentity:
        key = hashlib.sha256(presented.encode()).digest()
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        identity = self._shared(presented, redis) or self._verify(presented, redis)
        public_id = (tokens.split(presented) or ("", ""))[0]
        with self._lock:
            if len(self._entries) >= self.LIMIT:
                self._entries.clear()
            self._entries[key] = (now + self.LOCAL_TTL, identity, public_id)
        return identity

    def forget(self, public_id: str) -> None:
        with self._lock:
            for key in [k for k, entry in self._entries.items() if entry[2] == public_id]:
                del self._entries[key]

    def _shared(self, presented: str, redis: Redis) -> HostIdentity | None:
        parts = tokens.split(presented)
        if parts is None:
            return None
        try:
            cached = redis.get(host_token_key(parts[0]))
        except RedisError:
            return None
        if not isinstance(cached, bytes):
            return None
        digest, token_id, host_id, name = cached.decode().split(":", 3)
        if not hmac.compare_digest(digest, tokens.digest(parts[1]).hex()):
            return None
        return HostIdentity(int(token_id), int(host_id), name)

    def _verify(self, presented: str, redis: Redis) -> HostIdentity:
        token = tokens.authenticate(session(), presented)
        if token is None:
            raise Unauthorized("the token is invalid or revoked")
        if token.scope != "host" or token.host_id is None:
            raise Forbidden("this needs the token of a host")
        identity = HostIdentity(token.id, token.host_id, token.name)
        value = f"{token.secret_hash.hex()}:{token.id}:{token.host_id}:{token.name}"
        with contextlib.suppress(RedisError):
            redis.set(host_token_key(token.public_id), value, ex=self.SHARED_TTL)
        # The request goes on without holding a database connection (long polls wait).
        session().close()
        return identity


def host_token_key(public_id: str) -> str:
    return f"portside:host-token:{public_id}"


def forget_host_token(redis: Redis, public_id: str) -> None:
    """A revoked host token stops working here and in Redis at once."""
    _host_tokens.forget(public_id)
    with contextlib.suppress(RedisError):
        redis.delete(host_token_key(public_id))


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
        redis: Redis = current_app.extensions["portside.redis"]
        g.host_identity = _host_tokens.get(presented.strip(), redis)
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
