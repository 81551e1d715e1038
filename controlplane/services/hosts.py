"""Hosts: the servers agents run on, each with a token that sees only its own state."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.errors import Conflict, ValidationFailed
from controlplane.models import Host, utcnow
from controlplane.services import audit, tokens
from controlplane.statuses import TokenScope

HOST_NAME = re.compile(
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def create_host(
    session: Session,
    name: str,
    actor: str,
    accepts_previews: bool = False,
    *,
    untrusted: bool = False,
) -> tuple[Host, str]:
    """Create a host and its agent token; return the token's plaintext once. An
    ``untrusted`` host runs fork previews and never production."""
    name = name.strip().lower()
    if not HOST_NAME.match(name) or len(name) > 253:
        raise ValidationFailed(
            "a host name is lowercase letters, digits, dots and hyphens",
            details={"name": ["not a valid host name"]},
        )
    host = Host(name=name, accepts_previews=accepts_previews, untrusted=untrusted)
    session.add(host)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"host {name!r} already exists") from None
    _token, secret = tokens.create_token(
        session, f"agent:{name}", TokenScope.HOST, host_id=host.id, actor=actor
    )
    audit.record(session, actor, "host.create", "host", host.id, name=name, untrusted=untrusted)
    return host, secret


def list_hosts(session: Session) -> list[Host]:
    return list(session.scalars(select(Host).order_by(Host.name)))


def agent_token(session: Session, name: str) -> str:
    """A new token for the agent of host ``name``, creating the host if needed."""
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None:
        return create_host(session, name, "cli")[1]
    return tokens.create_token(
        session, f"agent:{name}", TokenScope.HOST, host_id=host.id, actor="cli"
    )[1]


def refuse_production_on(host: Host) -> None:
    """A production environment never runs next to code nobody reviewed (fork previews)."""
    if host.untrusted:
        raise ValidationFailed(
            f"host {host.name} is untrusted: it runs fork previews, never production",
            details={"host": ["an untrusted host takes no production environment"]},
        )


def is_online(host: Host, interval: int, now: dt.datetime | None = None) -> bool:
    """Whether the host's agent reported within three of its ticks (at least 30 s)."""
    if host.last_seen_at is None:
        return False
    return (now or utcnow()) - host.last_seen_at < dt.timedelta(seconds=max(30, 3 * interval))
