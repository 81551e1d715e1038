"""Observe what runs: only containers carrying Portside's environment label count.

Containers without the label are invisible here, so nothing the agent does can ever
touch them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hostagent import labels as lbl

ANY_IPV4 = "0.0.0.0"  # noqa: S104 - a binding read back from Docker, never bound to


@dataclass(frozen=True)
class ObservedContainer:
    """One labelled container, as much as planning and reporting need of it."""

    id: str
    name: str
    environment: str
    role: str
    config_hash: str | None
    deployment_id: int | None
    kind: str | None
    image: str
    status: str
    health: str | None = None
    restart_count: int = 0
    exit_code: int | None = None
    published: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    compose_service: str | None = None
    created: str = ""

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def serving(self) -> bool:
        """Running and not known to be sick: good enough to keep taking traffic."""
        return self.running and self.health in (None, "healthy")

    def address(self, port: int | None) -> str | None:
        """``host:port`` where ``port`` of the container is published, if it is."""
        if port is None:
            return None
        bound = self.published.get(f"{port}/tcp")
        if bound is None:
            return None
        host, host_port = bound
        return f"[{host}]:{host_port}" if ":" in host else f"{host}:{host_port}"


@dataclass(frozen=True)
class ObservedEnvironment:
    name: str
    containers: tuple[ObservedContainer, ...]

    @property
    def app_containers(self) -> tuple[ObservedContainer, ...]:
        return tuple(c for c in self.containers if c.role == lbl.ROLE_APP)

    @property
    def compose_containers(self) -> tuple[ObservedContainer, ...]:
        return tuple(c for c in self.containers if c.role == lbl.ROLE_COMPOSE)

    @property
    def kind(self) -> str | None:
        return next((c.kind for c in self.containers if c.kind), None)

    @property
    def deployment_id(self) -> int | None:
        ids = [c.deployment_id for c in self.containers if c.deployment_id is not None]
        return max(ids) if ids else None


@dataclass(frozen=True)
class ObservedState:
    environments: Mapping[str, ObservedEnvironment] = field(default_factory=dict)

    def get(self, name: str) -> ObservedEnvironment:
        return self.environments.get(name) or ObservedEnvironment(name, ())


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _published(attrs: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    published: dict[str, tuple[str, int]] = {}
    for key, bindings in ports.items():
        for binding in bindings or []:
            host_port = _int_or_none(binding.get("HostPort"))
            if host_port:
                published.setdefault(key, (binding.get("HostIp") or ANY_IPV4, host_port))
    return published


def container_from_attrs(attrs: Mapping[str, Any]) -> ObservedContainer:
    """Build an ObservedContainer from ``docker inspect`` data (pure, testable)."""
    config = attrs.get("Config") or {}
    labels: Mapping[str, str] = config.get("Labels") or {}
    state = attrs.get("State") or {}
    health = (state.get("Health") or {}).get("Status") or None
    return ObservedContainer(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        environment=labels.get(lbl.ENVIRONMENT, ""),
        role=labels.get(
            lbl.ROLE, lbl.ROLE_COMPOSE if lbl.COMPOSE_PROJECT in labels else lbl.ROLE_APP
        ),
        config_hash=labels.get(lbl.CONFIG_HASH),
        deployment_id=_int_or_none(labels.get(lbl.DEPLOYMENT)),
        kind=labels.get(lbl.KIND),
        image=str(config.get("Image", "")),
        status=str(state.get("Status", "unknown")),
        health=health,
        restart_count=_int_or_none(attrs.get("RestartCount")) or 0,
        exit_code=_int_or_none(state.get("ExitCode")),
        published=_published(attrs),
        compose_service=labels.get(lbl.COMPOSE_SERVICE),
        created=str(attrs.get("Created", "")),
    )


def group(containers: list[ObservedContainer]) -> ObservedState:
    """Group containers by environment, oldest first (stable order for planning)."""
    by_env: dict[str, list[ObservedContainer]] = {}
    for container in sorted(containers, key=lambda c: (c.created, c.name)):
        if container.environment:
            by_env.setdefault(container.environment, []).append(container)
    return ObservedState(
        {name: ObservedEnvironment(name, tuple(items)) for name, items in sorted(by_env.items())}
    )


def observe(client: Any, host: str | None = None) -> ObservedState:
    """List every container (running or not) carrying Portside's environment label.

    With ``host`` only containers this host's agent started count, so two agents (or
    tests) sharing one engine never see, let alone remove, each other's containers.
    """
    filters: dict[str, Any] = {"label": [lbl.ENVIRONMENT]}
    if host:
        filters["label"].append(f"{lbl.HOST}={host}")
    found: list[ObservedContainer] = []
    for summary in client.api.containers(all=True, filters=filters):
        try:
            attrs = client.api.inspect_container(summary["Id"])
        except Exception as exc:  # gone between list and inspect: it is simply not there
            if exc.__class__.__name__ == "NotFound":
                continue
            raise
        found.append(container_from_attrs(attrs))
    return group(found)
