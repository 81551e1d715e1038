"""``plan(desired, observed) -> actions``: the whole decision, as a pure function.

Level-triggered, in the manner of compose's convergence plan: for each environment
compare what should run (its config hash) with what runs, and emit the fewest actions
that close the gap. No I/O here, so every case is a table row in the tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass

from contracts.agentwire import DesiredEnvironment, DesiredState, Routing
from hostagent.composeorder import switch_phases
from hostagent.confighash import config_hash
from hostagent.observe import ObservedContainer, ObservedEnvironment, ObservedState

SHORT_HASH = 10


@dataclass(frozen=True)
class StartContainer:
    """Create and start a new container next to whatever still serves."""

    environment: str
    name: str
    spec: DesiredEnvironment
    config_hash: str
    routing: Routing
    host: str


@dataclass(frozen=True)
class WaitHealthy:
    """Gate: everything after it runs only once the new container is healthy."""

    environment: str
    name: str
    spec: DesiredEnvironment


@dataclass(frozen=True)
class StopContainer:
    environment: str
    container_id: str
    name: str


@dataclass(frozen=True)
class RemoveContainer:
    environment: str
    container_id: str
    name: str


@dataclass(frozen=True)
class ComposeUp:
    """``compose -p <env> up -d --remove-orphans`` with the pinned file; with ``services``
    only those (``--no-deps``), the rest of a switch being done around them."""

    environment: str
    spec: DesiredEnvironment
    config_hash: str
    routing: Routing
    host: str
    services: tuple[str, ...] = ()

    @property
    def file_text(self) -> str:
        return self.spec.compose or ""


@dataclass(frozen=True)
class ComposeStartRouted:
    """A new container of the routed compose service beside the ``replicas - 1`` that
    serve (``up --no-deps --no-recreate --scale <routed>=<replicas>``)."""

    environment: str
    spec: DesiredEnvironment
    config_hash: str
    routing: Routing
    host: str
    replicas: int


@dataclass(frozen=True)
class ComposeWaitRouted:
    """Gate: the routed service's container of ``config_hash`` passes the health check."""

    environment: str
    spec: DesiredEnvironment
    config_hash: str


@dataclass(frozen=True)
class ComposeDown:
    environment: str
    remove_volumes: bool


@dataclass(frozen=True)
class RemoveEnvironment:
    """Tear down an environment that is no longer desired (trusted, complete state only)."""

    environment: str
    kind: str | None
    deployment_id: int | None
    compose: bool
    container_ids: tuple[str, ...]

    @property
    def remove_volumes(self) -> bool:
        return self.kind == "preview"


Action = (
    StartContainer
    | WaitHealthy
    | StopContainer
    | RemoveContainer
    | ComposeUp
    | ComposeStartRouted
    | ComposeWaitRouted
    | ComposeDown
    | RemoveEnvironment
)


def container_name(env: DesiredEnvironment, digest: str, replica: int = 0) -> str:
    """``<env>-<deployment id>-<short hash>``: unique per config, readable in ``docker ps``;
    replicas after the first add ``-<n>`` (2, 3, ...)."""
    base = f"{env.name}-{env.deployment_id}-{digest[:SHORT_HASH]}"
    return base if replica == 0 else f"{base}-{replica + 1}"


def failure_key(env: DesiredEnvironment, digest: str) -> str:
    """Which failed deployment not to retry: the same deployment id with the same config.

    A redeploy (new deployment id) of an unchanged config is tried again on purpose.
    """
    return f"{env.deployment_id}:{digest}"


def _retire(containers: Collection[ObservedContainer]) -> list[Action]:
    actions: list[Action] = []
    for container in containers:
        if container.running or container.status in ("restarting", "paused"):
            actions.append(StopContainer(container.environment, container.id, container.name))
        actions.append(RemoveContainer(container.environment, container.id, container.name))
    return actions


def _plan_container(
    env: DesiredEnvironment,
    observed: ObservedEnvironment,
    digest: str,
    *,
    routing: Routing,
    host: str,
    failed: Collection[str],
) -> list[Action]:
    """Converge on ``env.replicas`` running containers of the wanted config.

    Rolling, one replica at a time: start a new one, wait until it is healthy, then
    retire one old one, so the serving containers never drop below what served before.
    Surplus and old containers go once every wanted replica serves.
    """
    apps = observed.app_containers
    matching = [c for c in apps if c.config_hash == digest]
    others = [c for c in apps if c.config_hash != digest]
    running = [c for c in matching if c.running]
    keepers = running[-env.replicas :]  # the newest ones
    compose_leftovers: list[Action] = (
        [ComposeDown(env.name, remove_volumes=False)] if observed.compose_containers else []
    )
    missing = env.replicas - len(keepers)
    if missing == 0:
        extra = [c for c in matching if c not in keepers]
        if all(c.serving for c in keepers):
            # Leftovers of an interrupted switch, surplus replicas, or a mode change.
            return _retire([*extra, *others]) + compose_leftovers
        return _retire([c for c in extra if not c.running])
    if failure_key(env, digest) in failed:
        # This exact config failed before: keep what serves, wait for a new state.
        return []
    # Dead containers of the wanted config serve nothing; clear them (and their names).
    dead = [c for c in matching if not c.running]
    serving_old = [c for c in others if c.running]
    dead_old = [c for c in others if not c.running]
    taken = {c.name for c in keepers}
    free = (
        i for i in range(env.replicas + len(taken)) if container_name(env, digest, i) not in taken
    )
    actions: list[Action] = [*_retire(dead)]
    for replica in itertools.islice(free, missing):
        name = container_name(env, digest, replica)
        actions += [
            StartContainer(env.name, name, env, digest, routing, host),
            WaitHealthy(env.name, name, env),
            *_retire(serving_old[:1]),
        ]
        serving_old = serving_old[1:]
    return [*actions, *_retire(serving_old), *_retire(dead_old), *compose_leftovers]


def _compose_needs_up(
    env: DesiredEnvironment, containers: tuple[ObservedContainer, ...], digest: str
) -> bool:
    if not containers:
        return True
    if any(c.config_hash != digest for c in containers):
        return True
    present = {c.compose_service for c in containers}
    if any(service not in present for service in env.compose_services):
        return True
    # A one-shot service that finished (exit 0) is done, not drifted.
    return any(not c.running and c.exit_code != 0 for c in containers)


def _switch_routed(
    env: DesiredEnvironment,
    observed: ObservedEnvironment,
    digest: str,
    *,
    routing: Routing,
    host: str,
) -> list[Action]:
    """The routed service switched as a single container is, the rest around it in
    ``depends_on`` order; empty when nothing of it serves yet (or it cannot run twice):
    then the whole project is brought up in place."""
    routed = env.routed_service
    phases = switch_phases(env.compose or "", routed) if routed else None
    if routed is None or phases is None:
        return []
    mine = [c for c in observed.compose_containers if c.compose_service == routed]
    serving = [c for c in mine if c.config_hash != digest and c.serving]
    if not serving:
        return []
    before, after = phases
    actions: list[Action] = [
        # Dead ones and leftovers of an interrupted switch: compose would count them.
        *_retire([c for c in mine if c not in serving]),
        *([ComposeUp(env.name, env, digest, routing, host, before)] if before else []),
        ComposeStartRouted(env.name, env, digest, routing, host, len(serving) + 1),
        ComposeWaitRouted(env.name, env, digest),
        *_retire(serving),
    ]
    if after:
        actions.append(ComposeUp(env.name, env, digest, routing, host, after))
    return actions


def _plan_compose(
    env: DesiredEnvironment,
    observed: ObservedEnvironment,
    digest: str,
    *,
    routing: Routing,
    host: str,
    failed: Collection[str],
) -> list[Action]:
    if failure_key(env, digest) in failed:
        # This exact config failed or was refused: keep what serves, wait for a new state.
        return []
    actions: list[Action] = []
    if _compose_needs_up(env, observed.compose_containers, digest):
        switch = _switch_routed(env, observed, digest, routing=routing, host=host)
        actions += switch or [ComposeUp(env.name, env, digest, routing, host)]
    # Containers of an earlier single-container deployment of this environment.
    actions.extend(_retire(observed.app_containers))
    return actions


def plan(
    desired: DesiredState | None,
    observed: ObservedState,
    *,
    publish_host: str = "",
    proxy_network: str = "",
    failed: Collection[str] = frozenset(),
) -> list[Action]:
    """The actions that make ``observed`` match ``desired``, in the order to run them.

    ``desired`` None means nothing is known yet: nothing is planned, least of all a
    removal. Environments observed but not desired are removed only when ``desired`` is
    complete; a refused environment is neither planned nor removed (what runs stays).
    ``failed`` holds :func:`failure_key` values of deployments that failed or were
    refused; they are not retried until the desired state brings a different one.
    """
    if desired is None:
        return []
    actions: list[Action] = []
    for env in desired.environments:
        digest = config_hash(env, publish_host, desired.routing, proxy_network=proxy_network)
        current = observed.get(env.name)
        if env.mode == "container":
            actions += _plan_container(
                env, current, digest, routing=desired.routing, host=desired.host, failed=failed
            )
        else:
            actions += _plan_compose(
                env, current, digest, routing=desired.routing, host=desired.host, failed=failed
            )
    if desired.complete:
        wanted = {env.name for env in desired.environments}
        wanted |= {refused.name for refused in desired.refused}
        for name, current in observed.environments.items():
            if name in wanted or not current.containers:
                continue
            actions.append(
                RemoveEnvironment(
                    environment=name,
                    kind=current.kind,
                    deployment_id=current.deployment_id,
                    compose=bool(current.compose_containers),
                    container_ids=tuple(c.id for c in current.containers),
                )
            )
    return actions
