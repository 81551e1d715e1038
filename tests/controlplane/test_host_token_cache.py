"""Redis is not trusted with identity: a host-token cache entry someone wrote into Redis
counts only if it was sealed with the secret key, and a token revoked anywhere (the CLI
included) is refused by every web process within the 15 s of its local cache."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.api import auth
from controlplane.db import Database
from controlplane.models import ApiToken, Host
from controlplane.services import hosts, tokens
from controlplane.settings import Settings

PORTSIDE = Path(sys.executable).with_name("portside")


class Clock:
    """The host-token cache's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth._host_tokens, "clock", fake)
    return fake


@pytest.fixture
def store(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


@pytest.fixture
def host_tokens(database: Database) -> dict[str, str]:
    """Two hosts' agent tokens, by host name."""
    with database.session_scope() as session:
        return {name: hosts.create_host(session, name, "test")[1] for name in ("web-1", "web-2")}


def poll(client: FlaskClient, token: str) -> tuple[int, str | None]:
    response = client.get("/v1/agent/desired-state", headers={"Authorization": f"Bearer {token}"})
    return response.status_code, (response.json or {}).get("host")


def test_a_forged_entry_for_a_made_up_token_is_401(
    client: FlaskClient, store: redis.Redis, host_tokens: dict[str, str], database: Database
) -> None:
    with database.session_scope() as session:
        host_id = session.scalar(select(Host.id).where(Host.name == "web-1"))
    made_up = "ps_0badc0ffee00_not-a-real-secret"
    secret_digest = hashlib.sha256(b"not-a-real-secret").hexdigest()
    guessed_key = hmac.new(b"guessed", b"portside host-token cache", hashlib.sha256).digest()
    identity = tokens.HostIdentity(1, int(host_id or 0), "web-1")
    forgeries = [
        # What an entry looked like before it was sealed: the secret's digest in clear.
        f"{secret_digest}:1:{host_id}:web-1".encode(),
        tokens.seal(guessed_key, "0badc0ffee00", bytes.fromhex(secret_digest), identity),
        f"1:{host_id}:{'0' * 64}:web-1".encode(),
        b"\xff\xfe",
    ]
    for forged in forgeries:
        store.set(tokens.host_token_key("0badc0ffee00"), forged)
        assert poll(client, made_up) == (401, None)


def test_an_altered_entry_is_ignored_and_the_token_checked_in_the_database(
    client: FlaskClient,
    store: redis.Redis,
    host_tokens: dict[str, str],
    database: Database,
    clock: Clock,
) -> None:
    token = host_tokens["web-1"]
    assert poll(client, token) == (200, "web-1")
    key = tokens.host_token_key(token.split("_")[1])
    sealed = store.get(key)
    assert isinstance(sealed, bytes) and token.split("_")[2].encode() not in sealed
    with database.session_scope() as session:
        other = session.scalar(select(Host.id).where(Host.name == "web-2"))
    token_id, _host_id, sealed_at, mac, name = sealed.decode().split(":", 4)
    altered = f"{token_id}:{other}:{sealed_at}:{mac}:{name}"
    store.set(key, altered)
    clock.now += auth._HostTokenCache.LOCAL_TTL
    assert poll(client, token) == (200, "web-1")
    assert store.get(key) == altered.encode()  # left, not trusted


def test_a_token_revoked_through_the_cli_is_refused_within_15_s(
    client: FlaskClient,
    store: redis.Redis,
    host_tokens: dict[str, str],
    settings: Settings,
    database: Database,
    clock: Clock,
) -> None:
    token = host_tokens["web-1"]
    public_id = token.split("_")[1]
    assert poll(client, token) == (200, "web-1")
    assert store.get(tokens.host_token_key(public_id)) not in (None, tokens.REVOKED)
    with database.session_scope() as session:
        token_id = session.scalar(select(ApiToken.id).where(ApiToken.public_id == public_id))
    env = {name: value for name, value in os.environ.items() if not name.startswith("PORTSIDE_")}
    env |= {
        "PORTSIDE_DATABASE_URL": settings.database_url,
        "PORTSIDE_REDIS_URL": settings.redis_url,
        "PORTSIDE_SECRET_KEY": settings.secret_key.reveal(),
        "PORTSIDE_DATA_DIR": str(settings.data_dir),
    }
    revoked = subprocess.run(
        [str(PORTSIDE), "tokens", "revoke", str(token_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert revoked.returncode == 0, revoked.stderr
    # This process is "another web process": the CLI could not touch its memory.
    assert store.get(tokens.host_token_key(public_id)) == tokens.REVOKED
    clock.now += auth._HostTokenCache.LOCAL_TTL
    assert poll(client, token) == (401, None)
    # The tombstone stays: no process puts the token back into the shared cache.
    assert store.get(tokens.host_token_key(public_id)) == tokens.REVOKED


def test_a_token_revoked_through_the_service_leaves_a_tombstone(
    client: FlaskClient,
    store: redis.Redis,
    host_tokens: dict[str, str],
    database: Database,
    clock: Clock,
) -> None:
    token = host_tokens["web-2"]
    public_id = token.split("_")[1]
    assert poll(client, token) == (200, "web-2")
    with database.session_scope() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.public_id == public_id))
        assert row is not None
        tokens.revoke_token(session, row.id, "test")
        assert store.get(tokens.host_token_key(public_id)) != tokens.REVOKED  # not before commit
    assert store.get(tokens.host_token_key(public_id)) == tokens.REVOKED
    clock.now += auth._HostTokenCache.LOCAL_TTL
    assert poll(client, token) == (401, None)


def test_an_old_entry_written_back_over_the_tombstone_is_401(
    client: FlaskClient,
    store: redis.Redis,
    host_tokens: dict[str, str],
    settings: Settings,
    database: Database,
    clock: Clock,
) -> None:
    """Someone who can write Redis saved the entry before the revocation and writes it
    back: it counts no longer than it would have lived in Redis."""
    token = host_tokens["web-1"]
    parts = tokens.split(token)
    assert parts is not None
    public_id, secret = parts
    assert poll(client, token) == (200, "web-1")
    with database.session_scope() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.public_id == public_id))
        assert row is not None
        identity = tokens.HostIdentity(row.id, int(row.host_id or 0), row.name)
        tokens.revoke_token(session, row.id, "test")
    assert store.get(tokens.host_token_key(public_id)) == tokens.REVOKED
    key = tokens.cache_mac_key(settings.secret_key.reveal())
    now = time.time()
    for sealed_at in (now - tokens.SHARED_TTL - 1, now + tokens.CLOCK_SKEW + 60):
        entry = tokens.seal(key, public_id, tokens.digest(secret), identity, now=sealed_at)
        store.set(tokens.host_token_key(public_id), entry)
        clock.now += auth._HostTokenCache.LOCAL_TTL
        assert poll(client, token) == (401, None)


def test_an_entry_counts_from_its_sealing_until_the_shared_ttl() -> None:
    key = tokens.cache_mac_key("k" * 32)
    presented = "ps_0123456789ab_the-secret"
    identity = tokens.HostIdentity(3, 4, "agent:web-1")
    entry = tokens.seal(key, "0123456789ab", tokens.digest("the-secret"), identity, now=5_000)

    def unseal(now: float) -> tokens.HostIdentity | None:
        return tokens.unseal(key, presented, entry, now=now)

    assert unseal(5_000) == identity
    assert unseal(5_000 + tokens.SHARED_TTL - 1) == identity
    assert unseal(5_000 + tokens.SHARED_TTL) is None
    assert unseal(5_000 - tokens.CLOCK_SKEW) == identity  # another web host's clock, behind
    assert unseal(5_000 - tokens.CLOCK_SKEW - 1) is None
    # The time is under the MAC: made younger, the entry is no longer the one sealed.
    token_id, host_id, _sealed_at, mac, name = entry.decode().split(":", 4)
    younger = f"{token_id}:{host_id}:{5_000 + tokens.SHARED_TTL}:{mac}:{name}".encode()
    assert tokens.unseal(key, presented, younger, now=5_000 + tokens.SHARED_TTL) is None
