"""Bearer-token authentication for the API: 401 without a valid token, 403 out of scope."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import current_app, g, request
from redis import Redis
from redis.exceptions import RedisError

from controlplane.api.requestdb import session
from controlplane.errors import NotPermitted, Unauthenticated
from controlplane.models import ApiToken
from controlplane.services import tokens
from controlplane.services.tokens import HostIdentity
from controlplane.settings import Settings
from controlplane.statuses import TokenScope

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
        raise Unauthenticated("a bearer token is required")
    token = tokens.authenticate(session(), presented.strip())
    if token is None:
        raise Unauthenticated("the token is invalid or revoked")
    return token


class _HostTokenCache:
    """Agents poll often, so their tokens are checked against the database rarely: a
    verified host token is remembered in this process for LOCAL_TTL seconds and in Redis,
    shared by every web worker, for tokens.SHARED_TTL seconds.

    Redis is not trusted with identity: a shared entry counts only if its MAC (keyed by
    the secret key, over the presented token and the identity) verifies; anything else is
    ignored and the token verified against the database. Revoking a token replaces its
    shared entry with a tombstone, so every process stops accepting it within LOCAL_TTL.
    """

    LOCAL_TTL = 15.0
    LIMIT = 50_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # presented token's SHA-256 → (expiry, identity, public id)
        self._entries: dict[bytes, tuple[float, HostIdentity, str]] = {}
        self._lock = threading.Lock()
        self.clock = clock

    def get(self, presented: str, redis: Redis, mac_key: bytes | None) -> HostIdentity:
        """``mac_key`` None (no secret key configured) keeps Redis out of it."""
        key = hashlib.sha256(presented.encode()).digest()
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        identity = self._shared(presented, redis, mac_key) or self._verify(
            presented, redis, mac_key
        )
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

    def _shared(self, presented: str, redis: Redis, mac_key: bytes | None) -> HostIdentity | None:
        parts = tokens.split(presented)
        if parts is None or mac_key is None:
            return None
        try:
            cached = redis.get(tokens.host_token_key(parts[0]))
        except RedisError:
            return None
        if not isinstance(cached, bytes):
            return None
        return tokens.unseal(mac_key, presented, cached)

    def _verify(self, presented: str, redis: Redis, mac_key: bytes | None) -> HostIdentity:
        token = tokens.authenticate(session(), presented)
        if token is None:
            raise Unauthenticated("the token is invalid or revoked")
        if token.scope != TokenScope.HOST or token.host_id is None:
            raise NotPermitted("this needs the token of a host")
        identity = HostIdentity(token.id, token.host_id, token.name)
        if mac_key is not None:
            sealed = tokens.seal(
                mac_key,
                token.public_id,
                token.secret_hash,
                identity,
            )
            # nx: a tombstone written by a revocation since the query above stays.
            with contextlib.suppress(RedisError):
                redis.set(
                    tokens.host_token_key(token.public_id), sealed, ex=tokens.SHARED_TTL, nx=True
                )
        # The request goes on without holding a database connection (long polls wait).
        session().close()
        return identity


def forget_host_token(redis: Redis, public_id: str) -> None:
    """A revoked host token stops working in this process at once (and everywhere else
    once its tombstone is in Redis, written after the revocation commits)."""
    _host_tokens.forget(public_id)
    with contextlib.suppress(RedisError):
        tokens.forget_shared(redis, {public_id})


@functools.cache
def _mac_key(secret_key: str) -> bytes | None:
    return tokens.cache_mac_key(secret_key) if secret_key else None


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
            raise Unauthenticated("a bearer token is required")
        redis: Redis = current_app.extensions["portside.redis"]
        settings: Settings = current_app.extensions["portside.settings"]
        mac_key = _mac_key(settings.secret_key.reveal())
        g.host_identity = _host_tokens.get(presented.strip(), redis, mac_key)
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
                raise NotPermitted(f"this needs a token of scope {' or '.join(sorted(allowed))}")
            g.api_token = token
            return view(*args, **kwargs)

        return wrapper

    return decorator
