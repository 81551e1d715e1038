"""The service catalog: creating, changing, listing and deleting services (what to build
and where to run it; the rules each field follows are in
:mod:`controlplane.services.servicerules`)."""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
from typing import Any

import bcrypt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts import logdrivers
from controlplane.crypto import SecretBox
from controlplane.errors import Conflict, Malformed, NotFound, ValidationFailed
from controlplane.models import Environment, Host, Repository, Service, utcnow
from controlplane.services import (
    audit,
    generations,
    gitsources,
    hosts,
    placements,
    previews,
)
from controlplane.services.servicerules import ServiceSpec, validate_spec
from controlplane.statuses import PreviewProtection

# Settings the agent and the preview lifecycle read as they are (validated by the schema).
RUNTIME_FIELDS = (
    "health_check_path",
    "cpu_limit",
    "memory_limit",
    "restart_policy",
    "previews_enabled",
    "fork_previews",
    "fork_previews_on_trusted_hosts",
    "compose_allow",
    "preview_ttl_seconds",
    "max_previews",
    "preview_protection",
    "preview_allow_networks",
    # When builds deploy (services.gates): at once, or once the commit's checks passed.
    "deploy_when",
    "required_checks",
    "checks_timeout",
    "log_driver",
)


PREVIEW_USERNAME = "preview"


def create_service(
    session: Session,
    spec: ServiceSpec,
    actor: str,
    *,
    box: SecretBox | None = None,
    allow_local_git: bool = False,
) -> Service:
    """Create a service and its production environment. A git-URL service (``spec.git``)
    is checked against its remote (``git ls-remote``) and its credentials are encrypted
    with ``box``; its images are named ``git/<name>``."""
    refs = None
    git = spec.git
    if git is not None:
        if spec.repository:
            raise Malformed(
                "give repository or git_url, not both",
                details={"repository": ["not with git_url"]},
            )
        git = gitsources.check_source(git, allow_local=allow_local_git)
        refs = gitsources.read_remote(git.url, git.auth)
        branch = (spec.branch or "").strip() or refs.head_branch
        if not branch:
            raise ValidationFailed(
                "the remote has no default branch", details={"branch": ["name the branch"]}
            )
        if refs.resolve(branch) is None:
            raise ValidationFailed(
                f"no branch {branch!r} on {git.url}", details={"branch": ["not on the remote"]}
            )
        spec = dataclasses.replace(
            spec,
            repository=f"{gitsources.IMAGE_OWNER}/{spec.name.strip().lower()}",
            branch=branch,
        )
    elif not spec.repository:
        raise Malformed(
            "give repository (owner/name) or git_url",
            details={"repository": ["owner/name, or git_url instead"]},
        )
    spec = ServiceSpec(
        name=spec.name.strip().lower(),
        repository=(spec.repository or "").strip(),
        branch=(spec.branch or "main").strip(),
        host=(spec.host or "").strip().lower(),
        compose_path=spec.compose_path,
        port=spec.port,
        domain=spec.domain.strip().lower() if spec.domain else None,
        watch_paths=list(spec.watch_paths),
        track_tags=spec.track_tags.strip() if spec.track_tags else None,
    )
    errors = validate_spec(spec)
    if errors:
        raise ValidationFailed("the service has invalid fields", details=errors)
    host = (
        session.scalar(select(Host).where(Host.name == spec.host))
        if spec.host
        else _only_host(session)
    )
    if host is None:
        raise ValidationFailed("unknown host", details={"host": [f"no host named {spec.host}"]})
    hosts.refuse_production_on(host)
    repository = (
        None
        if git is not None
        else session.scalar(
            select(Repository).where(
                Repository.full_name == spec.repository, Repository.removed_at.is_(None)
            )
        )
    )
    _free_name_of_deleted(session, spec.name)
    if session.scalar(select(Environment.id).where(Environment.name == spec.name)) is not None:
        # Its production would take the name: another service's staging environment has it.
        raise Conflict(f"an environment named {spec.name!r} exists")
    service = Service(
        name=spec.name,
        repository_full_name=spec.repository,
        repository_id=repository.id if repository else None,
        branch=spec.branch,
        host_id=host.id,
        compose_path=spec.compose_path,
        port=spec.port,
        domain=spec.domain,
        watch_paths=spec.watch_paths,
        track_tags=spec.track_tags,
    )
    if git is not None and refs is not None:
        gitsources.attach(service, git, box, refs)
    session.add(service)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"a service named {spec.name!r} or with that domain exists") from None
    session.add(
        Environment(
            service_id=service.id,
            host_id=host.id,
            name=service.name,
            kind="production",
            branch=service.branch,
            domain=service.domain,
        )
    )
    audit.record(session, actor, "service.create", "service", service.id, name=service.name)
    session.flush()
    return service


def _only_host(session: Session) -> Host:
    """The host a service goes to when none is named: the only one there is."""
    every = hosts.list_hosts(session)
    if len(every) != 1:
        raise ValidationFailed(
            "no host", details={"host": [f"give host or hosts ({len(every)} hosts exist)"]}
        )
    return every[0]


def update_service(
    session: Session, service_id: int, changes: dict[str, Any], actor: str
) -> Service:
    """Change what a service builds, where it runs and how (limits, health, previews)."""
    service = get_service(session, service_id)
    spec_changes = {k: v for k, v in changes.items() if k not in RUNTIME_FIELDS}
    if spec_changes.get("domain"):  # as on create: HELLO.example.com is hello.example.com
        spec_changes["domain"] = spec_changes["domain"].strip().lower()
    if spec_changes.get("track_tags") is not None:  # "" and null both go back to the branch
        spec_changes["track_tags"] = spec_changes["track_tags"].strip() or None
    current = dataclasses.replace(
        ServiceSpec(
            name=service.name,
            repository=service.repository_full_name,
            branch=service.branch,
            host=service.host.name,
            compose_path=service.compose_path,
            port=service.port,
            domain=service.domain,
            watch_paths=list(service.watch_paths),
            track_tags=service.track_tags,
        ),
        **spec_changes,
    )
    errors = validate_spec(current)
    if errors:
        raise ValidationFailed("the service has invalid fields", details=errors)
    if current.host != service.host.name:
        host = session.scalar(select(Host).where(Host.name == current.host))
        if host is None:
            raise ValidationFailed(
                "unknown host", details={"host": [f"no host named {current.host}"]}
            )
        hosts.refuse_production_on(host)
        service.host_id = host.id
    service.branch = current.branch or service.branch
    service.compose_path = current.compose_path
    service.port = current.port
    service.domain = current.domain.lower() if current.domain else None
    service.watch_paths = current.watch_paths
    service.track_tags = current.track_tags
    if "compose_allow" in changes:  # extra power for production builds: who and what
        allowed = sorted(set(changes["compose_allow"]))
        changes = {**changes, "compose_allow": allowed}
        if allowed != sorted(service.compose_allow):
            audit.record(
                session,
                actor,
                "service.compose_allow",
                "service",
                service.id,
                old=sorted(service.compose_allow),
                new=allowed,
            )
    changes = _check_protection(service, changes)
    changes = _check_log_driver(service, changes)
    protection_before = (service.preview_protection, list(service.preview_allow_networks))
    log_driver_before = dict(service.log_driver)
    for name in RUNTIME_FIELDS:
        if name in changes:
            setattr(service, name, changes[name])
    if (service.preview_protection, list(service.preview_allow_networks)) != protection_before:
        _republish(session, service, ("preview",))
    changed_kinds = {
        kind
        for kind in {*log_driver_before, *service.log_driver}
        if log_driver_before.get(kind) != service.log_driver.get(kind)
    }
    if changed_kinds:
        # Where the output goes is worth a trace (it may leave the team's network).
        audit.record(
            session,
            actor,
            "service.log_driver",
            "service",
            service.id,
            old=log_driver_before,
            new=service.log_driver,
        )
        # Docker sets a container's logging when it creates it: the agents recreate the
        # environments of the kinds that changed.
        _republish(session, service, tuple(sorted(changed_kinds)))
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict("another service has that domain") from None
    audit.record(session, actor, "service.update", "service", service.id, fields=sorted(changes))
    return service


def _check_protection(service: Service, changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` with its networks normalised (``10.1.2.3/8`` is ``10.0.0.0/8``);
    ValidationFailed if the protection asked for could not let anyone in."""
    if "preview_allow_networks" in changes:
        try:
            networks = [
                str(ipaddress.ip_network(str(text).strip(), strict=False))
                for text in changes["preview_allow_networks"]
            ]
        except ValueError as exc:
            raise ValidationFailed(
                "not a network", details={"preview_allow_networks": [str(exc)]}
            ) from None
        changes = {**changes, "preview_allow_networks": list(dict.fromkeys(networks))}
    protection = changes.get("preview_protection", service.preview_protection)
    networks = changes.get("preview_allow_networks", service.preview_allow_networks)
    if protection == "ip_allow" and not networks:
        raise ValidationFailed(
            "ip_allow needs networks",
            details={"preview_allow_networks": ["at least one CIDR for ip_allow"]},
        )
    if protection == "basic_auth" and service.preview_htpasswd_encrypted is None:
        raise ValidationFailed(
            "basic_auth needs a password first",
            details={
                "preview_protection": [
                    f"POST /v1/services/{service.id}/preview-password generates it"
                ]
            },
        )
    return changes


def _check_log_driver(service: Service, changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` with its ``log_driver`` checked and normalised
    (``contracts.logdrivers``: the same rules the agent applies), keyed by production,
    preview or another kind the service's environments have."""
    if "log_driver" not in changes:
        return changes
    kinds = {*logdrivers.KINDS, *(environment.kind for environment in service.environments)}
    try:
        drivers = logdrivers.parse_by_kind(changes["log_driver"], kinds=kinds)
    except logdrivers.LogDriverRefused as exc:
        raise ValidationFailed(
            "the log driver is refused", details={"log_driver": exc.problems}
        ) from None
    return {**changes, "log_driver": {kind: d.as_json() for kind, d in sorted(drivers.items())}}


def _republish(session: Session, service: Service, kinds: tuple[str, ...]) -> None:
    """Send new snapshots to the hosts of the service's environments of ``kinds``: what
    they run changes (routers, logging)."""
    environments = session.scalars(
        select(Environment).where(Environment.service_id == service.id, Environment.kind.in_(kinds))
    )
    # Every host each of them runs on (production on all of a spread service's hosts).
    host_ids = {host_id for env in environments for host_id in placements.host_ids(env)}
    for host_id in sorted(host_ids):
        generations.bump(session, host_id)


def htpasswd_line(username: str, password: str) -> str:
    """An htpasswd entry Traefik's basicAuth reads: bcrypt under htpasswd's own ``$2y$``
    prefix (the same algorithm as ``$2b$``)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"{username}:$2y${hashed.removeprefix('$2b$')}"


def generate_preview_password(
    session: Session, box: SecretBox, service_id: int, actor: str
) -> tuple[str, str]:
    """Replace the previews' basic-auth login with a new random password and turn
    ``basic_auth`` on; returns (username, password), the only time the password exists
    outside the hash."""
    service = get_service(session, service_id)
    password = secrets.token_urlsafe(18)
    service.preview_htpasswd_encrypted = box.encrypt(htpasswd_line(PREVIEW_USERNAME, password))
    service.preview_protection = PreviewProtection.BASIC_AUTH
    _republish(session, service, ("preview",))
    session.flush()
    audit.record(session, actor, "service.preview_password", "service", service.id)
    return PREVIEW_USERNAME, password


def get_service(session: Session, service_id: int) -> Service:
    service = session.get(Service, service_id)
    if service is None or service.deleted_at is not None:
        raise NotFound(f"service {service_id} does not exist")
    return service


def list_services(session: Session) -> list[Service]:
    return list(
        session.scalars(select(Service).where(Service.deleted_at.is_(None)).order_by(Service.name))
    )


def _free_name_of_deleted(session: Session, name: str) -> None:
    """A deleted service's name may be taken again: the deleted service and its
    environments (production ``<name>``, ``<name>-pr-<n>``, ``<name>-<kind>``) are renamed
    ``…~<service id>`` only now, long after their teardown's GitHub feedback went out under
    the old names; the audit log keeps what they were called."""
    deleted = session.scalar(
        select(Service).where(Service.name == name, Service.deleted_at.is_not(None))
    )
    if deleted is None:
        return
    suffix = f"~{deleted.id}"
    deleted.name = f"{name[: 63 - len(suffix)]}{suffix}"
    for environment in session.scalars(
        select(Environment).where(Environment.service_id == deleted.id)
    ):
        environment.name = f"{environment.name[: 100 - len(suffix)]}{suffix}"
    session.flush()


def delete_service(session: Session, service_id: int, actor: str) -> None:
    """Delete a service and tear down every environment of it, production included: out
    of its host's desired state, builds cancelled, images deleted after the commit."""
    service = get_service(session, service_id)
    environments = session.scalars(
        select(Environment).where(Environment.service_id == service.id).order_by(Environment.id)
    )
    for environment in environments:
        previews.teardown(session, environment, actor, "service deleted")
    service.deleted_at = utcnow()
    service.domain = None
    audit.record(session, actor, "service.delete", "service", service.id, name=service.name)
