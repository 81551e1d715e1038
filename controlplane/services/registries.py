"""Registry credentials: a global default per registry and per-installation overrides,
stored encrypted and handed out only to the build worker or agent that needs them.

Each carries push credentials, for build workers (and the control plane's own image
cleanup), and optionally pull-only credentials, the only ones agents ever receive.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import requests
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.crypto import SecretBox
from controlplane.errors import Conflict, NotFound, TransientError, ValidationFailed
from controlplane.models import Installation, RegistryCredential
from controlplane.services import audit

log = logging.getLogger(__name__)

REGISTRY_ADDRESS = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9._/-]+)?$")


@dataclass(frozen=True, slots=True)
class Credentials:
    address: str
    username: str | None
    password: str | None

    def __repr__(self) -> str:
        return f"Credentials(address={self.address!r}, username={self.username!r}, password='***')"


def registry_host(address: str) -> str:
    """The host[:port] part of a registry address (``host:5000/prefix`` → ``host:5000``)."""
    return address.split("/", 1)[0]


def create_registry(
    session: Session,
    box: SecretBox,
    *,
    address: str,
    username: str | None,
    password: str | None,
    installation_id: int | None,
    actor: str,
    pull_username: str | None = None,
    pull_password: str | None = None,
) -> RegistryCredential:
    address = address.strip().lower().rstrip("/")
    if "://" in address or not REGISTRY_ADDRESS.match(address):
        raise ValidationFailed(
            "not a registry address", details={"address": ["host[:port][/prefix], no scheme"]}
        )
    if installation_id is not None and session.get(Installation, installation_id) is None:
        raise ValidationFailed(
            "unknown installation", details={"installation_id": ["no such installation"]}
        )
    if bool(username) != bool(password):
        raise ValidationFailed(
            "username and password go together",
            details={"password": ["give both username and password, or neither"]},
        )
    if bool(pull_username) != bool(pull_password):
        raise ValidationFailed(
            "pull_username and pull_password go together",
            details={"pull_password": ["give both pull_username and pull_password, or neither"]},
        )
    registry = RegistryCredential(
        address=address,
        installation_id=installation_id,
        username=username,
        password_encrypted=box.encrypt(password) if password else None,
        pull_username=pull_username,
        pull_password_encrypted=box.encrypt(pull_password) if pull_password else None,
    )
    session.add(registry)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"credentials for {address} exist for that scope") from None
    audit.record(session, actor, "registry.create", "registry", registry.id, address=address)
    return registry


def list_registries(session: Session) -> list[RegistryCredential]:
    return list(session.scalars(select(RegistryCredential).order_by(RegistryCredential.id)))


def delete_registry(session: Session, registry_id: int, actor: str) -> None:
    registry = session.get(RegistryCredential, registry_id)
    if registry is None:
        raise NotFound(f"registry {registry_id} does not exist")
    session.delete(registry)
    audit.record(session, actor, "registry.delete", "registry", registry_id)


def credentials_for(
    session: Session,
    box: SecretBox,
    address: str,
    installation_id: int | None,
    *,
    pull_only: bool = False,
) -> Credentials:
    """The installation's override for ``address``, else the global default, else none.

    ``pull_only`` (for agents) gives the pull credentials, or none: an agent's host never
    holds what could push an image over the one production runs."""
    host = registry_host(address)
    candidates = list(
        session.scalars(
            select(RegistryCredential).where(
                RegistryCredential.address.in_({address, host}),
                (RegistryCredential.installation_id == installation_id)
                | RegistryCredential.installation_id.is_(None),
            )
        )
    )
    candidates.sort(key=lambda r: (r.installation_id is None, r.address != address))
    if not candidates:
        return Credentials(address, None, None)
    chosen = candidates[0]
    if pull_only:
        encrypted, username = chosen.pull_password_encrypted, chosen.pull_username
    else:
        encrypted, username = chosen.password_encrypted, chosen.username
    password = box.decrypt(encrypted) if encrypted else None
    return Credentials(address, username if password else None, password)


def _registry_url(host: str) -> str:
    """Registries on loopback speak plain HTTP (as Docker assumes); others HTTPS."""
    bare = host.split(":", 1)[0]
    plain = bare in ("localhost", "::1") or bare.startswith("127.")
    return f"{'http' if plain else 'https'}://{host}"


def delete_image(credentials: Credentials, repository: str, digest: str) -> bool:
    """Delete a pushed image (every tag on it) by digest; True when it is gone."""
    host, _, name = repository.partition("/")
    auth = (
        (credentials.username, credentials.password)
        if credentials.username and credentials.password
        else None
    )
    try:
        response = requests.delete(
            f"{_registry_url(host)}/v2/{name}/manifests/{digest}", auth=auth, timeout=30
        )
    except requests.RequestException as exc:
        raise TransientError(f"registry {host} is unreachable: {exc.__class__.__name__}") from None
    if response.status_code in (202, 404):
        return True
    if response.status_code >= 500:
        raise TransientError(f"registry {host} answered {response.status_code}")
    log.warning("registry %s refused to delete %s@%s: %s", host, name, digest, response.status_code)
    return False
