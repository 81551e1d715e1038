"""Registry credentials: a global default per registry and per-installation overrides,
stored encrypted and handed out only to the build worker or agent that needs them.

Each carries push credentials, for build workers (and the control plane's own image
cleanup), and optionally pull-only credentials, the only ones agents ever receive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts.image_names import is_loopback_registry
from controlplane.crypto import SecretBox
from controlplane.errors import (
    Conflict,
    NotFound,
    PermanentError,
    TransientError,
    ValidationFailed,
)
from controlplane.models import Installation, RegistryCredential
from controlplane.services import audit

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


class RegistryRefused(PermanentError):
    """The registry (or its token server) refused what the credentials asked: retrying
    with the same credentials cannot help; an operator has to fix them or the registry."""


# One auth-param of a challenge: name="quoted value" or name=token.
_CHALLENGE_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)=(?:"([^"]*)"|([^,\s]*))')


def _registry_url(host: str) -> str:
    """Registries on loopback speak plain HTTP (as Docker assumes); others HTTPS."""
    return f"{'http' if is_loopback_registry(host) else 'https'}://{host}"


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """The scheme (lower case) and parameters of a ``WWW-Authenticate`` challenge."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): m[2] or m[3] for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def _send(http: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    try:
        response = http.request(method, url, timeout=30, allow_redirects=False, **kwargs)
    except requests.RequestException as exc:
        host = urlsplit(url).netloc
        raise TransientError(f"{host} is unreachable: {exc.__class__.__name__}") from None
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientError(f"{urlsplit(url).netloc} answered {response.status_code}")
    return response


def _registry_error(response: requests.Response) -> str:
    """The registry's own words for a refusal (its ``errors`` body), else the status."""
    try:
        errors = response.json().get("errors") or []
        detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        detail = ""
    return f"{response.status_code} {detail}".strip()


def _realm_allowed(realm: str) -> bool:
    """Whether the push credentials may go to ``realm``: HTTPS, or plain HTTP on loopback.

    The host checked is the one the client connects to: a realm with user info
    (``http://127.0.0.1:80@elsewhere/``) or a port that is no number is refused."""
    parts = urlsplit(realm)
    try:
        parts.port  # noqa: B018 (raises on a port that is no number)
    except ValueError:
        return False
    if "@" in parts.netloc or not parts.hostname:
        return False
    if parts.scheme == "https":
        return True
    address = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.scheme == "http" and is_loopback_registry(address)


def _bearer_token(
    http: requests.Session,
    host: str,
    params: dict[str, str],
    basic: tuple[str, str] | None,
    scope: str,
) -> str:
    """A token from the challenge's realm for its scope (Docker's token authentication):
    GET realm?service=...&scope=... with the credentials as HTTP Basic. ``host`` is the
    registry's, for the messages."""
    realm = params.get("realm", "")
    parts = urlsplit(realm)
    if not _realm_allowed(realm):
        raise RegistryRefused(f"registry {host} names a token realm not on HTTPS: {realm!r}")
    query = {"scope": params.get("scope") or scope}
    if "service" in params:
        query["service"] = params["service"]
    response = _send(http, "GET", realm, params=query, auth=basic)
    if response.status_code != 200:
        raise RegistryRefused(
            f"the token server of registry {host} ({parts.netloc}) refused the credentials: "
            f"{response.status_code}"
        )
    try:
        body = response.json()
        token = body.get("token") or body.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise RegistryRefused(f"the token server of registry {host} gave no token")
    return token


def delete_image(credentials: Credentials, repository: str, digest: str) -> None:
    """Delete a pushed image (every tag on it) by digest; an image already gone is fine.

    A registry that answers 401 with a ``Bearer`` challenge (GHCR, Docker Hub, Harbor, a
    registry with ``auth: token``) gets the token flow; others HTTP Basic. Raises
    :class:`RegistryRefused` when refused, :class:`TransientError` when unreachable."""
    host, _, name = repository.partition("/")
    url = f"{_registry_url(host)}/v2/{name}/manifests/{digest}"
    basic = (
        (credentials.username, credentials.password)
        if credentials.username and credentials.password
        else None
    )
    with requests.Session() as http:
        response = _send(http, "DELETE", url, auth=basic)
        if response.status_code == 401:
            scheme, params = _challenge(response.headers.get("WWW-Authenticate", ""))
            if scheme == "bearer":
                token = _bearer_token(http, host, params, basic, f"repository:{name}:delete")
                headers = {"Authorization": f"Bearer {token}"}
                response = _send(http, "DELETE", url, headers=headers)
    if response.status_code in (200, 202, 404):
        return
    raise RegistryRefused(
        f"registry {host} refused to delete {name}@{digest}: {_registry_error(response)}"
    )
