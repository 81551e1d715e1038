"""API tokens: random secrets shown once, stored as SHA-256, looked up by a public id.

Host tokens are also remembered in Redis, shared by every web process (see
``controlplane.api.auth``). Redis is not trusted with identity: an entry is authenticated
with a MAC keyed by the secret key over the token's public id, its secret's digest, the
identity and the time it was sealed, so someone who can write Redis can neither forge nor
alter one, nor bring one back once it would have expired; revoking a token, from the API,
the CLI or anywhere else, replaces its entry with a tombstone once the revocation commits
(:func:`forgetter`, installed on every process's database).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.errors import Malformed, NotFound
from controlplane.models import ApiToken, utcnow
from controlplane.services import audit
from controlplane.statuses import BUILD_LANES, TOKEN_SCOPES, TokenScope

PREFIX = "ps"
SHARED_TTL = 600  # seconds a host token stays in Redis; revoking replaces it at once
CLOCK_SKEW = 60  # seconds an entry may seem sealed in the future (web hosts' clocks differ)
REVOKED = b"revoked"  # a revoked token's tombstone: never cached again while it lasts
_REVOKED_PUBLIC_IDS = "portside.revoked_tokens"  # session.info: tombstones due on commit


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split(presented: str) -> tuple[str, str] | None:
    """``ps_<public id>_<secret>`` → (public id, secret); None when malformed."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    return parts[1], parts[2]


def create_token(
    session: Session,
    name: str,
    scope: str,
    host_id: int | None = None,
    actor: str = "system",
    *,
    builds: str | None = None,
) -> tuple[ApiToken, str]:
    """Create a token and return it with its plaintext, which is never stored (audited).

    ``builds`` is a worker token's lane (None: the trusted builds only), so a fork's code
    runs only on workers whose token was made for it."""
    if scope not in TOKEN_SCOPES:
        raise Malformed(f"scope must be one of {', '.join(TOKEN_SCOPES)}")
    if builds is not None and scope != TokenScope.WORKER:
        raise Malformed("only a worker token has a lane of builds")
    if builds is not None and builds not in BUILD_LANES:
        raise Malformed(f"builds must be one of {', '.join(BUILD_LANES)}")
    if scope == TokenScope.HOST and host_id is None:
        raise Malformed("a host token belongs to a host")
    if not name.strip():
        raise Malformed("a token needs a name")
    public_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = ApiToken(
        public_id=public_id,
        secret_hash=digest(secret),
        name=name.strip(),
        scope=scope,
        host_id=host_id,
        builds=builds,
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        actor,
        "token.create",
        "token",
        token.id,
        name=token.name,
        scope=scope,
        **({"builds": builds} if builds else {}),
    )
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
    """Revoke a token; once this commits its shared cache entry is gone (every path that
    revokes goes through here, so the API and the CLI stop it alike)."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"token {token_id} does not exist")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(session, actor, "token.revoke", "token", token_id)
    session.info.setdefault(_REVOKED_PUBLIC_IDS, set()).add(token.public_id)
    return token


def host_token_key(public_id: str) -> str:
    return f"portside:host-token:{public_id}"


def forget_shared(redis: Redis, public_ids: set[str]) -> None:
    """Replace these tokens' shared cache entries with tombstones, which a web process
    that verified the token just before the revocation cannot overwrite (it adds entries
    only where none is)."""
    if not public_ids:
        return
    pipe = redis.pipeline(transaction=False)
    for public_id in public_ids:
        pipe.set(host_token_key(public_id), REVOKED, ex=SHARED_TTL)
    pipe.execute()


def forgetter(redis: Redis) -> Callable[[Session], None]:
    """An after-commit hook writing the tombstones of the tokens a transaction revoked."""

    def forget_committed(session: Session) -> None:
        public_ids = session.info.pop(_REVOKED_PUBLIC_IDS, set())
        # The Redis being down loses nothing: local caches expire, the entry's TTL too.
        with contextlib.suppress(RedisError):
            forget_shared(redis, public_ids)

    return forget_committed


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """Who a host token is: what the API acts as, and what the shared cache remembers."""

    token_id: int
    host_id: int
    name: str


def cache_mac_key(secret_key: str) -> bytes:
    """The key of the shared cache's MACs, derived from (and never equal to) the secret key."""
    return hmac.new(secret_key.encode(), b"portside host-token cache", hashlib.sha256).digest()


def _mac(
    key: bytes, public_id: str, secret_digest: bytes, identity: HostIdentity, sealed_at: int
) -> str:
    message = "\0".join(
        (
            public_id,
            secret_digest.hex(),
            str(identity.token_id),
            str(identity.host_id),
            identity.name,
            str(sealed_at),
        )
    )
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def seal(
    key: bytes,
    public_id: str,
    secret_digest: bytes,
    identity: HostIdentity,
    *,
    now: float | None = None,
) -> bytes:
    """The shared cache entry of a verified host token (its secret is not in it), with the
    time it was made under the MAC: an entry saved and written back over a revoked token's
    tombstone works no longer than the entry itself would have lived."""
    sealed_at = int(time.time() if now is None else now)
    mac = _mac(key, public_id, secret_digest, identity, sealed_at)
    return f"{identity.token_id}:{identity.host_id}:{sealed_at}:{mac}:{identity.name}".encode()


def unseal(
    key: bytes, presented: str, entry: bytes, *, now: float | None = None
) -> HostIdentity | None:
    """The identity in ``entry`` if it was sealed with ``key`` for exactly the presented
    token less than SHARED_TTL seconds ago; None for a tombstone, a forged, altered or
    expired entry (or one from further in the future than clocks disagree), or another
    secret."""
    parts = split(presented)
    if parts is None or entry == REVOKED:
        return None
    try:
        token_id, host_id, sealed_at, mac, name = entry.decode().split(":", 4)
        identity = HostIdentity(int(token_id), int(host_id), name)
        age = (time.time() if now is None else now) - int(sealed_at)
    except ValueError:  # not an entry this code wrote (UnicodeDecodeError is one)
        return None
    if not -CLOCK_SKEW <= age < SHARED_TTL:
        return None
    expected = _mac(key, parts[0], digest(parts[1]), identity, int(sealed_at))
    return identity if hmac.compare_digest(mac, expected) else None


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))
