"""API tokens: random secrets shown once, stored as SHA-256, looked up by a public id."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.errors import BadRequest, NotFound
from controlplane.models import TOKEN_SCOPES, ApiToken, utcnow
from controlplane.services import audit

PREFIX = "ps"


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split(presented: str) -> tuple[str, str] | None:
    """``ps_<public id>_<secret>`` → (public id, secret); None when malformed."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    return parts[1], parts[2]


def create_token(
    session: Session, name: str, scope: str, host_id: int | None = None, actor: str = "system"
) -> tuple[ApiToken, str]:
    """Create a token and return it with its plaintext, which is never stored (audited)."""
    if scope not in TOKEN_SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(TOKEN_SCOPES)}")
    if scope == "host" and host_id is None:
        raise BadRequest("a host token belongs to a host")
    if not name.strip():
        raise BadRequest("a token needs a name")
    public_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = ApiToken(
        public_id=public_id,
        secret_hash=digest(secret),
        name=name.strip(),
        scope=scope,
        host_id=host_id,
    )
    session.add(token)
    session.flush()
    audit.record(session, actor, "token.create", "token", token.id, name=token.name, scope=scope)
    return token, f"{PREFIX}_{public_id}_{secret}"


def authenticate(session: Session, presented: str) -> ApiToken | None:
    """Return the live token matching ``presented``, comparing secrets in constant time."""
    parts = split(presented)
    if parts is None:
        return None
    public_id, secret = parts
    token = session.scalar(select(ApiToken).where(ApiToken.public_id == public_id))
    if token is None or token.revoked_at is not None:
        # Compare anyway so a missing id costs the same as a wrong secret.
        hmac.compare_digest(digest(secret), b"\0" * 32)
        return None
    if not hmac.compare_digest(digest(secret), token.secret_hash):
        return None
    return token


def revoke_token(session: Session, token_id: int, actor: str) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"token {token_id} does not exist")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(session, actor, "token.revoke", "token", token_id)
    return token


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))
