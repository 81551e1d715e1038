"""The compose part of an environment's desired state: the file checked against the
policy with the service's limits, the service it routes, and the others it publishes."""

from __future__ import annotations

from contracts.agentwire import Route
from contracts.compose_policy import Caps, load_and_check, parse_memory
from contracts.compose_routes import published_routes, routed_service
from contracts.yamlsafe import YamlRefused, load_yaml
from controlplane.models import Build, Service


def checked_routed_service(
    compose: str, build: Build, service: Service, compose_allow: list[str]
) -> str | None:
    """The service ``compose`` routes, once the file passed the policy with the service's
    limits; from the file itself, never from the order the database returns images in."""
    memory = parse_memory(service.memory_limit) if service.memory_limit else None
    document = load_and_check(
        compose,
        extra_allowed=frozenset(compose_allow),
        caps=Caps(cpus=service.cpu_limit, memory_bytes=memory),
    )
    routed = routed_service(document)
    if build.routed_service is not None and build.routed_service != routed:
        raise ValueError(
            f"the compose file routes {routed!r}, the build recorded {build.routed_service!r}"
        )
    return routed


def compose_routes(compose: str, routed: str | None, domain: str | None) -> tuple[Route, ...]:
    """Each other service the file publishes with ``ports:`` gets ``<service>.<domain>``;
    ``expose``-only services stay internal."""
    if not domain:
        return ()
    try:
        document = load_yaml(compose) or {}
    except YamlRefused:
        return ()
    if not isinstance(document, dict):
        return ()
    return tuple(
        Route(r.service, r.port, (f"{r.label}.{domain}",))
        for r in published_routes(document, routed)
    )
