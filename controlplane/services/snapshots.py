"""Desired state: the full snapshot a host's agent converges to, versioned by the host's
generation (:mod:`controlplane.services.generations`).

Each environment is validated and rendered on its own: one that fails (a compose file the
policy refuses, a variable that does not decrypt, anything) is left out of the snapshot
and listed in its ``withheld`` list (``{name, reason}``), which tells the agent to keep
whatever it runs for it, never to tear it down, and not to report it; the environment is
set to status ``refused`` with the reason. Every other environment is served.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from contracts import envkinds, logdrivers
from contracts.agentwire import (
    DesiredEnvironment,
    DesiredState,
    HealthCheck,
    Mode,
    Protection,
    RefusedEnvironment,
    RegistryAuth,
    Resources,
    Routing,
)
from contracts.logdrivers import LogDriver
from controlplane.crypto import SecretBox
from controlplane.models import Deployment, Environment, Host, Service, Variable
from controlplane.services import placements, refusals, registries
from controlplane.services.composestate import checked_routed_service, compose_routes
from controlplane.statuses import EnvironmentStatus, PreviewProtection, VariableScope

log = logging.getLogger(__name__)


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
        if row.scope not in (VariableScope.ALL, environment.kind):
            continue
        if (
            environment.from_fork
            and row.is_secret
            and not environment.secrets_approved_for(_running_commit(environment))
        ):
            continue
        values[row.name] = box.decrypt(row.value_encrypted)
    return values


def _preview_protection(box: SecretBox, service: Service) -> Protection | None:
    """What the agent puts in front of the service's previews (``PATCH
    /v1/services/{id}``'s ``preview_protection``), or None if nothing."""
    if (
        service.preview_protection == PreviewProtection.BASIC_AUTH
        and service.preview_htpasswd_encrypted
    ):
        return Protection(basic_auth=(box.decrypt(service.preview_htpasswd_encrypted),))
    if service.preview_protection == PreviewProtection.IP_ALLOW and service.preview_allow_networks:
        return Protection(ip_allow=tuple(str(net) for net in service.preview_allow_networks))
    return None


def _environment_state(
    box: SecretBox,
    environment: Environment,
    service_variables: list[Variable],
    credentials_for: Callable[[int | None], registries.Credentials],
) -> DesiredEnvironment | None:
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
    routed = checked_routed_service(compose, build, service, compose_allow) if compose else None
    installation_id = service.repository.installation_id if service.repository else None
    credentials = credentials_for(installation_id)
    mode: Mode = "compose" if compose else "container"
    return DesiredEnvironment(
        name=environment.name,
        kind=environment.kind,
        service=service.name,
        deployment_id=deployment.id,
        build_id=build.id,
        commit_sha=build.commit_sha,
        mode=mode,
        image=image,
        compose=compose,
        compose_allow=frozenset(compose_allow),
        port=service.port,
        routed_service=routed,
        routes=compose_routes(compose, routed, environment.domain) if compose else (),
        domains=(environment.domain,) if environment.domain else (),
        env=_runtime_env(box, environment, service_variables),
        health_check=HealthCheck(service.health_check_path, 60.0) if service.port else None,
        resources=Resources(
            cpus=service.cpu_limit, memory=service.memory_limit, restart=service.restart_policy
        ),
        registry=RegistryAuth(credentials.address, credentials.username, credentials.password),
        protection=_preview_protection(box, service) if environment.kind == "preview" else None,
        # This host's share of a single-container environment (compose runs one of each).
        replicas=1 if compose else placements.replicas_for(environment),
        log_driver=_log_driver(service, environment.kind),
    )


def _log_driver(service: Service, kind: str) -> LogDriver | None:
    """The environment's Docker logging driver (``PATCH /v1/services/{id}``'s
    ``log_driver`` for its kind), or None for Docker's default."""
    chosen = (service.log_driver or {}).get(kind)
    return logdrivers.parse(chosen) if chosen else None


def snapshot(session: Session, box: SecretBox, host: Host, registry_address: str) -> DesiredState:
    """Everything ``host`` should run, with its secrets decrypted for it alone."""
    environments = session.scalars(
        select(Environment)
        .where(
            placements.placed_on(host.id),
            Environment.status != EnvironmentStatus.INACTIVE,
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

    states: list[DesiredEnvironment] = []
    withheld: list[RefusedEnvironment] = []
    for environment in environments:
        try:
            state = _environment_state(
                box, environment, variables[environment.service_id], credentials_for
            )
        except SQLAlchemyError:
            raise  # the database, not this environment: no snapshot at all
        except Exception as exc:  # anything else costs this environment alone
            reason = refusals.withhold(session, environment, exc)
            log.warning("environment %s withheld from its snapshot: %s", environment.name, reason)
            withheld.append(RefusedEnvironment(environment.name, None, reason, withheld=True))
            continue
        if state is not None:
            states.append(state)
            refusals.unwithhold(environment)
    document = DesiredState(
        host=host.name,
        generation=host.generation,
        complete=True,
        routing=Routing(host.entrypoint, host.cert_resolver),
        environments=tuple(states),
        refused=tuple(withheld),
    )
    if session.dirty:
        # The GET that asked commits nothing else; the refusals are for people to read.
        session.commit()
    return document
