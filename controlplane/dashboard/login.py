"""Who is looking at the dashboard: an API token, remembered in a signed session cookie.

The cookie never holds the token itself: only its public id and an HMAC of its stored
hash, so a revoked (or deleted) token ends every dashboard session at the next request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.models import ApiToken
from controlplane.services import tokens
from controlplane.settings import Settings

log = logging.getLogger(__name__)

# Scopes a person may log in with; worker and host tokens belong to machines.
DASHBOARD_SCOPES = ("read", "admin")
SESSION_LIFETIME = dt.timedelta(hours=12)
KEY_FILE = "dashboard-session.key"


def session_secret(settings: Settings) -> bytes:
    """The key that signs session cookies.

    Derived from ``PORTSIDE_SECRET_KEY`` (never the same bytes as the key that encrypts
    secrets); without one, a random key kept in the data directory, so every worker
    process of one machine shares it and sessions survive restarts.
    """
    if settings.secret_key:
        return hmac.new(
            settings.secret_key.reveal().encode(), b"portside-dashboard-session-v1", hashlib.sha256
        ).digest()
    try:
        return _key_file(settings.data_dir / KEY_FILE)
    except OSError as exc:
        log.warning(
            "dashboard sessions use a key of this process only (%s); set PORTSIDE_SECRET_KEY",
            exc,
        )
        return secrets.token_bytes(32)


def _key_file(path: Path) -> bytes:
    """Read the key at ``path``, creating it first (atomically, mode 0600) if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(secrets.token_bytes(32))
            # Fails if another process won the race: its key is the one everyone uses.
            with contextlib.suppress(FileExistsError):
                os.link(scratch, path)
        finally:
            scratch.unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) < 32:
        raise OSError(f"{path} holds no usable key")
    return key


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions with the signer made once, not on every request:
    Flask opens the session of every request, an agent's poll included, and making the
    signer was a tenth of what such a poll cost."""

    def __init__(self) -> None:
        self._signer: URLSafeTimedSerializer | None = None
        self._signed_with: str | bytes | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if self._signer is None or self._signed_with != app.secret_key:
            self._signer = super().get_signing_serializer(app)
            self._signed_with = app.secret_key
        return self._signer


def configure(app: Flask, settings: Settings) -> None:
    """Give the app its session key and cookie settings (once, when the blueprint registers)."""
    if not app.secret_key:
        app.secret_key = session_secret(settings)
    app.session_interface = CookieSessions()
    app.config.setdefault("SESSION_COOKIE_NAME", "portside_session")
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )


def _check(secret_key: bytes, token: ApiToken) -> str:
    return hmac.new(secret_key, token.secret_hash, hashlib.sha256).hexdigest()


def log_in(db: Session, presented: str, secret_key: bytes) -> ApiToken | None:
    """Start a session for ``presented`` if it is a live read or admin token."""
    token = tokens.authenticate(db, presented.strip())
    if token is None or token.scope not in DASHBOARD_SCOPES:
        return None
    session.clear()
    session.permanent = True
    session["token"] = token.public_id
    session["check"] = _check(secret_key, token)
    session["csrf"] = secrets.token_urlsafe(24)
    return token


def current_token(db: Session, secret_key: bytes) -> ApiToken | None:
    """The token of this session, if the session is valid and the token still live."""
    public_id = session.get("token")
    check = session.get("check")
    if not isinstance(public_id, str) or not isinstance(check, str):
        return None
    token = db.scalar(select(ApiToken).where(ApiToken.public_id == public_id))
    if token is None or token.revoked_at is not None or token.scope not in DASHBOARD_SCOPES:
        return None
    if not hmac.compare_digest(check, _check(secret_key, token)):
        return None
    return token


def csrf_token() -> str:
    value = session.get("csrf")
    return value if isinstance(value, str) else ""


def csrf_ok(presented: str | None) -> bool:
    expected = csrf_token()
    return bool(expected) and hmac.compare_digest(expected, presented or "")


def log_out() -> None:
    session.clear()


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None: a redirect after login must
    never leave for another origin. Browsers drop tabs and newlines from a URL and read a
    backslash as a slash, so ``/\\host`` and ``/<tab>/host`` are ``//host`` to them:
    both are refused, as is any whitespace, control character or backslash."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ch.isspace() or not ch.isprintable() for ch in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target
