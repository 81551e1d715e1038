"""Desired state: the full snapshot a host's agent converges to, versioned by the host's
generation, and the agent's reports that move deployments to active or failed.

Every change of what a host should run bumps its generation in the same transaction
(:func:`bump`); after the commit the new generation is written to Redis and published on
the host's wake-up channel, so a long-polling agent hears of it at once and an agent
that is up to date is answered 304 from Redis alone.

Each environment is validated and rendered on its own: one that fails (a compose file the
policy refuses, a variable that does not decrypt, anything) is left out of the snapshot
and listed in its ``withheld`` list (``{name, reason}``), which tells the agent to keep
whatever it runs for it, never to tear it down, and not to report it; the environment is
set to status ``refused`` with the reason. Every other environment is served.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from redis import BlockingConnectionPool, Redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from contracts import envkinds
from contracts.compose_policy import Caps, load_and_check, parse_memory
from contracts.compose_routes import published_routes, routed_service
from contracts.yamlsafe import YamlRefused, load_yaml
from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.errors import NotFound, ValidationFailed
from controlplane.models import Deployment, Environment, Host, Service, Variable, utcnow
from controlplane.services import audit, effects, gates, placements, registries, stops, tokens
from controlplane.settings import Settings

log = logging.getLogger(__name__)

GENERATION_TTL = 30  # seconds; bounds how long a stale cached generation can live
CHANGED_HOSTS = "portside.changed_hosts"
REDIS_CONNECTIONS = 64  # per process
# How a refusal made while rendering a snapshot starts its status_reason: such an
# environment goes back to deploying once it renders again.
WITHHELD_REASON = "not served by the control plane: "


def generation_key(host_id: int) -> str:
    return f"portside:host:{host_id}:generation"


_WAKE_CHANNEL_FORMAT = "portside:host:{}:wake"
# Every host's wake channel, for one pattern subscription per web process.
WAKE_PATTERN = _WAKE_CHANNEL_FORMAT.format("*")


def wake_channel(host_id: int) -> str:
    return _WAKE_CHANNEL_FORMAT.format(host_id)


_WAKE_CHANNEL = re.compile(r"portside:host:(\d+):wake")


def host_of_wake_channel(channel: str) -> int | None:
    matched = _WAKE_CHANNEL.fullmatch(channel)
    return int(matched.group(1)) if matched else None


def bump(session: Session, host_id: int) -> None:
    """Advance a host's generation; announced to its agent after the commit."""
    session.execute(update(Host).where(Host.id == host_id).values(generation=Host.generation + 1))
    session.info.setdefault(CHANGED_HOSTS, set()).add(host_id)


def bump_environment(session: Session, environment: Environment) -> None:
    """Advance the generation of every host ``environment`` runs on."""
    for host_id in placements.host_ids(environment):
        bump(session, host_id)


def announcer(engine: Engine, redis: Redis) -> Callable[[Session], None]:
    """An after-commit hook announcing the generations a transaction bumped."""

    def announce_committed(session: Session) -> None:
        announce(engine, redis, session.info.pop(CHANGED_HOSTS, set()))

    return announce_committed


def open_database(settings: Settings) -> tuple[Database, Redis]:
    """A process's database handle that, after each commit, announces new generations,
    forgets revoked tokens in Redis and asks running builds to stop (best effort; what must
    not be lost goes through the outbox, :mod:`~controlplane.services.effects`)."""
    database = Database(settings)
    # A web process runs hundreds of threads: past the pool's size they wait their turn
    # (redis-py's default pool raises "Too many connections" instead).
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=REDIS_CONNECTIONS,
        timeout=5,
        socket_connect_timeout=2,
        socket_timeout=5,
    )
    redis = Redis(connection_pool=pool)
    database.after_commit(announcer(database.engine, redis))
    database.after_commit(tokens.forgetter(redis))
    database.after_commit(stops.requester(redis))
    return database, redis


def announce(engine: Engine, redis: Redis, host_ids: set[int]) -> None:
    """Write the committed generations to Redis and wake the agents (best effort)."""
    if not host_ids:
        return
    with engine.connect() as connection:
        rows = connection.execute(
            select(Host.id, Host.generation).where(Host.id.in_(host_ids))
        ).all()
    try:
        pipe = redis.pipeline(transaction=False)
        for host_id, generation in rows:
            pipe.set(generation_key(host_id), generation, ex=GENERATION_TTL)
            pipe.publish(wake_channel(host_id), generation)
        pipe.execute()
    except RedisError as exc:  # agents still converge on their next tick
        log.warning("could not announce new generations: %s", exc)


def cached_generation(redis: Redis, host_id: int) -> int | None:
    try:
        value = redis.get(generation_key(host_id))
    except RedisError:
        return None
    return int(value) if value is not None else None  # type: ignore[arg-type]


def remember_generation(redis: Redis, host_id: int, generation: int) -> None:
    with contextlib.suppress(RedisError):  # the cache is an optimisation only
        redis.set(generation_key(host_id), generation, ex=GENERATION_TTL, nx=True)


def _running_commit(environment: Environment) -> str | None:
    deployment = environment.current_deployment
    return deployment.build.commit_sha if deployment is not None else None


def _runtime_env(
    box: SecretBox, environment: Environment, service_variables: list[Variable]
) -> dict[str, str]:
    rows = [row for row in service_variables if row.environment_id in (None, environment.id)]
    values: dict[str, str] = {}
    # Environment-specific values override the service's; forks get only what is allowed.
    for row in sorted(rows, key=lambda r: r.environment_id is not None):
        if row.scope not in ("all", environment.kind):
            continue
        if (
            environment.from_fork
            and row.is_secret
            and not environment.secrets_approved_for(_running_commit(environment))
        ):
            continue
        values[row.name] = box.decrypt(row.value_encrypted)
    return values


def _preview_protection(box: SecretBox, service: Service) -> dict[str, Any] | None:
    """What the agent puts in front of the service's previews (``PATCH
    /v1/services/{id}``'s ``preview_protection``), or None if nothing."""
    if service.preview_protection == "basic_auth" and service.preview_htpasswd_encrypted:
        return {"basic_auth": [box.decrypt(service.preview_htpasswd_encrypted)]}
    if service.preview_protection == "ip_allow" and service.preview_allow_networks:
        return {"ip_allow": [str(network) for network in service.preview_allow_networks]}
    return None


def _environment_state(
    box: SecretBox,
    environment: Environment,
    service_variables: list[Variable],
    credentials_for: Callable[[int | None], registries.Credentials],
) -> dict[str, Any] | None:
    deployment = environment.current_deployment
    if deployment is None:
        return None
    build = deployment.build
    service = environment.service
    compose = build.compose
    image = None
    if not compose:
        app_image = build.images.get("app") or next(iter(build.images.values()), None)
        if app_image is None:
            return None
        image = f"{app_image['repository']}@{app_image['digest']}"
    production = envkinds.runs_like_production(environment.kind) and not build.untrusted
    compose_allow = sorted(map(str, service.compose_allow)) if production else []
    routed = None
    if compose:
        memory = parse_memory(service.memory_limit) if service.memory_limit else None
        document = load_and_check(
            compose,
            extra_allowed=frozenset(compose_allow),
            caps=Caps(cpus=service.cpu_limit, memory_bytes=memory),
        )
        # From the file itself, never from the order the database returns images in.
        routed = routed_service(document)
        if build.routed_service is not None and build.routed_service != routed:
            raise ValueError(
                f"the compose file routes {routed!r}, the build recorded {build.routed_service!r}"
            )
    installation_id = service.repository.installation_id if service.repository else None
    credentials = credentials_for(installation_id)
    protection = _preview_protection(box, service) if environment.kind == "preview" else None
    return {
        "name": environment.name,
        "kind": environment.kind,
        "service": service.name,
        "deployment_id": deployment.id,
        "build_id": build.id,
        "commit_sha": build.commit_sha,
        "mode": "compose" if compose else "container",
        "image": image,
        "compose": compose,
        "compose_allow": compose_allow,
        "port": service.port,
        "routed_service": routed,
        "routes": compose_routes(compose, routed, environment.domain) if compose else [],
        "domains": [environment.domain] if environment.domain else [],
        "env": _runtime_env(box, environment, service_variables),
        "health_check": {"path": service.health_check_path, "timeout": 60}
        if service.port
        else None,
        "resources": {
            "cpus": service.cpu_limit,
            "memory": service.memory_limit,
            "restart": service.restart_policy,
        },
        "registry": {
            "address": credentials.address,
            "username": credentials.username,
            "password": credentials.password,
        },
        **({"protection": protection} if protection else {}),
        **_replicas(environment, compose),
        **_log_driver(service, environment.kind),
    }


def _log_driver(service: Service, kind: str) -> dict[str, Any]:
    """The environment's Docker logging driver (``PATCH /v1/services/{id}``'s
    ``log_driver`` for its kind) as a snapshot entry, or nothing for Docker's default."""
    chosen = (service.log_driver or {}).get(kind)
    return {"log_driver": chosen} if chosen else {}


def _replicas(environment: Environment, compose: str | None) -> dict[str, int]:
    """This host's share of a single-container environment: the service's replicas
    (compose environments run one of each service; one replica is left unsaid)."""
    replicas = placements.replicas_for(environment)
    return {"replicas": replicas} if replicas > 1 and not compose else {}


def compose_routes(compose: str, routed: str | None, domain: str | None) -> list[dict[str, Any]]:
    """Each other service the file publishes with ``ports:`` gets ``<service>.<domain>``;
    ``expose``-only services stay internal."""
    if not domain:
        return []
    try:
        document = load_yaml(compose) or {}
    except YamlRefused:
        return []
    if not isinstance(document, dict):
        return []
    return [
        {"service": r.service, "port": r.port, "domains": [f"{r.label}.{domain}"]}
        for r in published_routes(document, routed)
    ]


def snapshot(session: Session, box: SecretBox, host: Host, registry_address: str) -> dict[str, Any]:
    """Everything ``host`` should run, with its secrets decrypted for it alone."""
    environments = session.scalars(
        select(Environment)
        .where(
            placements.placed_on(host.id),
            Environment.status != "inactive",
            Environment.current_deployment_id.is_not(None),
        )
        .order_by(Environment.name)
        # One query per relationship for the whole host, not several per environment.
        .options(
            selectinload(Environment.current_deployment).selectinload(Deployment.build),
            selectinload(Environment.service).selectinload(Service.repository),
        )
    ).all()
    # The runtime variables of every service here in one query, and each installation's
    # registry credentials once: a host with fifty environments is a handful of queries.
    variables: dict[int, list[Variable]] = defaultdict(list)
    service_ids = {environment.service_id for environment in environments}
    if service_ids:
        for row in session.scalars(
            select(Variable).where(Variable.service_id.in_(service_ids), Variable.kind == "runtime")
        ):
            variables[row.service_id].append(row)

    @functools.cache
    def credentials_for(installation_id: int | None) -> registries.Credentials:
        return registries.credentials_for(
            session, box, registry_address, installation_id, pull_only=True
        )

    states: list[dict[str, Any]] = []
    withheld: list[dict[str, str]] = []
    for environment in environments:
        try:
            state = _environment_state(
                box, environment, variables[environment.service_id], credentials_for
            )
        except SQLAlchemyError:
            raise  # the database, not this environment: no snapshot at all
        except Exception as exc:  # anything else costs this environment alone
            reason = WITHHELD_REASON + _reason(exc)
            log.warning("environment %s withheld from its snapshot: %s", environment.name, reason)
            withheld.append({"name": environment.name, "reason": reason})
            refuse(session, environment, reason)
            continue
        if state is not None:
            states.append(state)
            _unrefuse(environment)
    document = {
        "host": host.name,
        "generation": host.generation,
        "complete": True,
        "routing": {"entrypoint": host.entrypoint, "cert_resolver": host.cert_resolver},
        "environments": states,
        "withheld": withheld,
    }
    if session.dirty:
        # The GET that asked commits nothing else; the refusals are for people to read.
        session.commit()
    return document


def _reason(exc: Exception) -> str:
    """Why an environment could not be rendered, for a person (never a secret: the
    exceptions met here carry key paths and class names, not values)."""
    text = str(exc).strip()
    return (f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__)[:2000]


def refuse(session: Session, environment: Environment, reason: str, **detail: Any) -> None:
    """Show that ``environment`` is refused and why (audited once per reason)."""
    if environment.status == "refused" and environment.status_reason == reason:
        return
    environment.status = "refused"
    environment.status_reason = reason
    audit.record(
        session,
        "control plane",
        "environment.refused",
        "environment",
        environment.id,
        reason=reason,
        **detail,
    )


def _unrefuse(environment: Environment) -> None:
    """An environment withheld before renders again: its agent converges it now."""
    if environment.status == "refused" and (environment.status_reason or "").startswith(
        WITHHELD_REASON
    ):
        environment.status = "deploying"
        environment.status_reason = None


def _previous_active(
    session: Session, environment: Environment, failed: Deployment
) -> Deployment | None:
    return session.scalar(
        select(Deployment)
        .where(
            Deployment.environment_id == environment.id,
            Deployment.id != failed.id,
            Deployment.activated_at.is_not(None),
            Deployment.status.in_(("active", "superseded")),
        )
        .order_by(Deployment.activated_at.desc())
        .limit(1)
    )


def record_status(session: Session, host: Host, report: dict[str, Any]) -> None:
    """Apply an agent's report: activate healthy deployments, fail and revert broken ones.

    ``refused`` means the agent will not run the deployment (its snapshot entry or compose
    file broke the rules) and keeps whatever it ran for the environment: the deployment
    fails, the environment shows ``refused`` with the agent's reason, nothing is reverted.
    """
    host.last_seen_at = utcnow()
    host.agent_version = str(report.get("agent_version") or "")[:64] or None
    generation = report.get("generation")
    if isinstance(generation, int):
        host.applied_generation = generation
    host.observed = report
    for item in report.get("environments") or []:
        environment = session.scalar(
            select(Environment).where(
                placements.placed_on(host.id), Environment.name == item.get("name")
            )
        )
        if environment is None:
            continue
        deployment = session.get(Deployment, item.get("deployment_id"))
        if deployment is None or deployment.environment_id != environment.id:
            continue
        state = item.get("state")
        if state == "running" and item.get("healthy"):
            # Active once every host runs it; the address is its own (first) host's.
            if placements.running_everywhere(session, environment, deployment.id, host):
                address = (
                    item.get("address")
                    if environment.host_id == host.id
                    else placements.reported_address(session, environment, deployment.id)
                )
                _activate(session, environment, deployment, address)
        elif state == "failed" and deployment.status in ("pending", "active"):
            _fail(session, environment, deployment, item)
        elif state == "refused":
            reason = str(item.get("error") or "refused by the host agent")[:8000]
            if deployment.status == "pending":
                deployment.status = "failed"
                deployment.error = reason
                audit.record(session, "agent", "deployment.refused", "deployment", deployment.id)
                effects.note_feedback(session, "deployment_failed", deployment.id)
                effects.note_notification(session, "deployment_failed", deployment.id)
            if (
                environment.current_deployment_id == deployment.id
                and environment.status not in gates.HELD
            ):
                environment.status = "refused"
                environment.status_reason = reason


def _activate(
    session: Session, environment: Environment, deployment: Deployment, address: object
) -> None:
    if isinstance(address, str) and address:
        environment.address = address[:255]
    newly_active = deployment.status != "active"
    # A fork preview whose new head awaits approval keeps saying so while the approved
    # commit before it runs on; a refusal (of a later build's artifacts) stays shown while
    # the deployment before it serves, until a new deployment runs.
    if (
        environment.current_deployment_id == deployment.id
        and environment.status not in gates.HELD
        and (newly_active or environment.status != "refused")
    ):
        environment.status = "running"
        if newly_active:
            environment.status_reason = None
    if not newly_active:
        return
    deployment.status = "active"
    deployment.activated_at = utcnow()
    deployment.error = None
    session.execute(
        update(Deployment)
        .where(
            Deployment.environment_id == environment.id,
            Deployment.id != deployment.id,
            Deployment.status == "active",
        )
        .values(status="superseded")
    )
    audit.record(session, "agent", "deployment.active", "deployment", deployment.id)
    effects.note_feedback(session, "deployment_active", deployment.id)
    effects.note_notification(session, "deployment_active", deployment.id)


def _fail(
    session: Session, environment: Environment, deployment: Deployment, item: dict[str, Any]
) -> None:
    error = str(item.get("error") or "the agent could not run the deployment")
    logs = item.get("logs")
    deployment.status = "failed"
    deployment.error = (f"{error}\n{logs}" if logs else error)[:8000]
    audit.record(session, "agent", "deployment.failed", "deployment", deployment.id)
    effects.note_feedback(session, "deployment_failed", deployment.id)
    effects.note_notification(session, "deployment_failed", deployment.id)
    if environment.current_deployment_id != deployment.id:
        return
    previous = _previous_active(session, environment, deployment)
    # Desired state goes back to what is still serving; nothing to run if nothing was.
    environment.current_deployment_id = previous.id if previous else None
    environment.status = "running" if previous else "failed"
    if previous is not None:
        previous.status = "active"
    environment.generation += 1
    bump_environment(session, environment)


def rollback(
    session: Session, environment_id: int, deployment_id: int | None, actor: str
) -> Deployment:
    """Make an earlier successful deployment the desired state again."""
    environment = session.get(Environment, environment_id, with_for_update=True)
    if environment is None:
        raise NotFound(f"environment {environment_id} does not exist")
    candidates = list(
        session.scalars(
            select(Deployment)
            .where(
                Deployment.environment_id == environment.id,
                Deployment.activated_at.is_not(None),
                Deployment.id != environment.current_deployment_id,
            )
            .order_by(Deployment.activated_at.desc())
        )
    )
    if deployment_id is not None:
        candidates = [d for d in candidates if d.id == deployment_id]
    if not candidates:
        raise ValidationFailed(
            "nothing to roll back to",
            details={"deployment_id": ["no earlier successful deployment of this environment"]},
        )
    target = candidates[0]
    target.status = "pending"
    environment.current_deployment_id = target.id
    environment.status = "deploying"
    environment.generation += 1
    bump_environment(session, environment)
    audit.record(
        session, actor, "environment.rollback", "environment", environment.id, deployment=target.id
    )
    return target


def is_online(host: Host, interval: int, now: dt.datetime | None = None) -> bool:
    if host.last_seen_at is None:
        return False
    return (now or utcnow()) - host.last_seen_at < dt.timedelta(seconds=max(30, 3 * interval))
