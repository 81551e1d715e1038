"""Which compose services get routes: one pure function for the worker and control plane.

The build worker fails a build whose routed service cannot be told from its compose file,
and the control plane derives it again from the pinned file it serves, so both always
agree and neither ever depends on the order a database returned the images in.

The routed service (the environment's own domain and health gate) is, in this order: the
one named by ``x-portside: {route: <service>}`` at the top level; else the one service
published with ``ports:``; else the only service that listens (``ports:`` or
``expose:``); else, with one service only, that one. Anything else is ambiguous and
refused with the choices named. Besides it, only services published with ``ports:`` get a
route (``<service>.<domain>``): ``expose`` keeps a service internal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EXTENSION_KEY = "x-portside"
ROUTE_KEY = "route"


class RouteChoiceError(ValueError):
    """The compose file does not say which service to route; the message says how to."""


@dataclass(frozen=True)
class ServiceRoute:
    """A service other than the routed one that gets ``<label>.<domain>`` on ``port``."""

    service: str
    port: int
    label: str


def container_port(entry: Any) -> int | None:
    """The container side of a ``ports``/``expose`` entry (8080, "80:8080/tcp", long form)."""
    if isinstance(entry, Mapping):
        entry = entry.get("target")
    if isinstance(entry, bool):
        return None
    text = str(entry).split("/", 1)[0].rsplit(":", 1)[-1].split("-", 1)[0]
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def routed_service(document: Mapping[str, Any]) -> str | None:
    """The service that gets the environment's domain; None when the file has no services.

    RouteChoiceError when ``x-portside`` is malformed or names no service, or when the
    file leaves the choice open (the message names the candidates).
    """
    services = _services(document)
    if not services:
        return None
    named = _named_route(document, services)
    if named is not None:
        return named
    published = [name for name, spec in services.items() if _ports(spec, "ports")]
    if len(published) == 1:
        return published[0]
    hint = f"name one with '{EXTENSION_KEY}: {{{ROUTE_KEY}: <service>}}' at the top level"
    if published:
        raise RouteChoiceError(
            f"compose file: several services are published with ports: ({', '.join(published)})"
            f" and none is named the routed one; {hint}"
        )
    listening = [name for name, spec in services.items() if _ports(spec, "expose")]
    if len(listening) == 1:
        return listening[0]
    if len(services) == 1:
        return next(iter(services))
    choices = listening or list(services)
    raise RouteChoiceError(
        f"compose file: cannot tell which service to route between {', '.join(choices)}; {hint}"
    )


def published_routes(document: Mapping[str, Any], routed: str | None) -> list[ServiceRoute]:
    """The services published with ``ports:`` other than ``routed``, in file order, each
    with its first container port and a DNS label made of its name."""
    routes = []
    for name, spec in _services(document).items():
        if name == routed:
            continue
        port = next((p for p in _ports(spec, "ports") if p), None)
        label = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")
        if port is not None and label:
            routes.append(ServiceRoute(name, port, label))
    return routes


def _services(document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    services = document.get("services")
    if not isinstance(services, Mapping):
        return {}
    return {
        name: spec
        for name, spec in services.items()
        if isinstance(name, str) and isinstance(spec, Mapping)
    }


def _named_route(document: Mapping[str, Any], services: Mapping[str, Any]) -> str | None:
    extension = document.get(EXTENSION_KEY)
    if extension is None:
        return None
    if not isinstance(extension, Mapping):
        raise RouteChoiceError(f"compose file: {EXTENSION_KEY} must be a mapping")
    unknown = sorted(str(key) for key in extension if key != ROUTE_KEY)
    if unknown:
        raise RouteChoiceError(
            f"compose file: {EXTENSION_KEY}.{unknown[0]}: not known (only {ROUTE_KEY})"
        )
    route = extension.get(ROUTE_KEY)
    if route is None:
        return None
    if not isinstance(route, str) or route not in services:
        raise RouteChoiceError(
            f"compose file: {EXTENSION_KEY}.{ROUTE_KEY}: {route!r} is not a service of the file"
            f" (services: {', '.join(services)})"
        )
    return route


def _ports(spec: Mapping[str, Any], key: str) -> list[int | None]:
    """The container ports of ``spec[key]``; for ``expose``, those of ``ports`` too."""
    keys = ("ports", "expose") if key == "expose" else ("ports",)
    entries = [e for k in keys if isinstance(spec.get(k), list) for e in spec[k]]
    return [container_port(entry) for entry in entries]
