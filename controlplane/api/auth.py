"""Bearer-token authentication for the API: 401 without a valid token, 403 out of scope."""

from __future__ import annotations

import functools
from collections.abc import Callable
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
