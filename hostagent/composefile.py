"""Compose documents as the agent runs them: checked by the policy once more, made
literal and stripped of routing labels and published ports, and the agent's override.

Pure: no Docker, no files; :mod:`hostagent.composerun` runs what this writes.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from contracts.agentwire import DesiredEnvironment, Resources
from contracts.compose_policy import (
    Caps,
    ComposeRefused,
    is_routing_label,
    load_and_check,
    parse_memory,
)
from hostagent import labels as lbl
from hostagent.errors import EnvironmentRefused
from hostagent.plan import ComposeStartRouted, ComposeUp
from hostagent.traefik import traefik_labels

# The least share of a preview's budget a container may get: Docker's own minimums.
MIN_CPUS = 0.01
MIN_MEMORY = 6 * 1024 * 1024
# The override's key for the proxy network (declared external, under its real name).
PROXY_NETWORK_KEY = "portside-proxy"
# Compose limit keys the override sets, and where ``deploy.resources.limits`` says the same.
LIMIT_KEYS = (("cpus", "cpus"), ("mem_limit", "memory"), ("pids_limit", "pids"))
# Compose's escaped dollar first, so that it is kept as it is; any other dollar doubled.
_DOLLAR = re.compile(r"\$\$?")


def checked_compose(spec: DesiredEnvironment) -> dict[str, Any]:
    """The compose file after the policy (the last line), made safe to run.

    Refused: EnvironmentRefused naming every key path, and nothing is started.
    """
    try:
        document = load_and_check(
            spec.compose or "",
            extra_allowed=spec.allowed_compose_keys,
            caps=resource_caps(spec.resources),
        )
    except ComposeRefused as exc:
        raise EnvironmentRefused(str(exc)) from None
    return sanitized_compose(document)


def override_document(
    action: ComposeUp | ComposeStartRouted,
    document: Mapping[str, Any],
    *,
    proxy_network: str = "",
    publish_host: str = "",
) -> dict[str, Any]:
    """Labels, runtime env, restart policy, limits (a preview's shared by its services)
    and the one published port, per service; the services Traefik routes to join the
    proxy network (declared external), keeping their own networks."""
    spec = action.spec
    services: Mapping[str, Any] = document.get("services") or {}
    if proxy_network and PROXY_NETWORK_KEY in (document.get("networks") or {}):
        raise EnvironmentRefused(
            f"compose file refused: networks.{PROXY_NETWORK_KEY}: the agent's own name"
        )
    network = proxy_network
    common = {
        lbl.ENVIRONMENT: spec.name,
        lbl.DEPLOYMENT: str(spec.deployment_id),
        lbl.CONFIG_HASH: action.config_hash,
        lbl.MANAGED: "1",
        lbl.ROLE: lbl.ROLE_COMPOSE,
        lbl.KIND: spec.kind,
        lbl.HOST: action.host,
    }
    # Compose interpolates "$": escape it so values arrive as they were given.
    env = {key: value.replace("$", "$$") for key, value in spec.env.items()}
    override: dict[str, Any] = {}
    if "version" in document:
        override["version"] = document["version"]
    out: dict[str, Any] = {}
    for name, service in services.items():
        entry: dict[str, Any] = {"labels": dict(common)}
        if env:
            entry["environment"] = dict(env)
        if "restart" not in service:
            entry["restart"] = spec.resources.restart
        entry.update(service_limits(spec, service, len(services)))
        logging_config = lbl.log_config(spec, name)
        if logging_config is not None:
            options = logging_config["options"]
            entry["logging"] = {
                "driver": logging_config["driver"],
                "options": {key: value.replace("$", "$$") for key, value in options.items()},
            }
        if name == spec.routed_service:
            entry["labels"].update(
                {
                    key: value.replace("$", "$$")
                    for key, value in traefik_labels(
                        spec.name,
                        spec.domains,
                        spec.port,
                        action.routing,
                        spec.health_check,
                        network=network,
                        protection=spec.protection,
                    ).items()
                }
            )
            if publish_host and spec.port:
                entry["ports"] = [f"{publish_host}::{spec.port}"]
        for route in spec.routes:
            if route.service == name:
                router = f"{spec.name}-{re.sub(r'[^a-z0-9-]', '-', name.lower())}"
                labels = traefik_labels(
                    router,
                    route.domains,
                    route.port,
                    action.routing,
                    network=network,
                    protection=spec.protection,
                )
                entry["labels"].update({k: v.replace("$", "$$") for k, v in labels.items()})
        if network and "traefik.enable" in entry["labels"]:
            # Without networks of its own a service is on "default": keep it there.
            entry["networks"] = {key: {} for key in service.get("networks") or ["default"]}
            entry["networks"][PROXY_NETWORK_KEY] = {}
        out[name] = entry
    override["services"] = out
    if network and any("networks" in entry for entry in out.values()):
        override["networks"] = {PROXY_NETWORK_KEY: {"external": True, "name": network}}
    return override


def service_limits(
    spec: DesiredEnvironment, service: Mapping[str, Any], count: int
) -> dict[str, Any]:
    """The limits the override gives one of the ``count`` services of a compose file.

    Production: the environment's limits, each container, unless the file sets its own
    (within the caps: the policy checked). A preview: its limits are a budget for the
    whole environment, so each service gets an equal share of it, or what the file asks
    if that is less; EnvironmentRefused when a share is below what Docker can run.
    """
    resources = spec.resources
    limits = {"cpus": resources.cpus, "mem_limit": resources.memory, "pids_limit": resources.pids}
    if spec.kind != "preview":
        return {key: value for key, value in limits.items() if value and key not in service}
    shares: dict[str, Any] = {}
    if resources.cpus:
        shares["cpus"] = math.floor(resources.cpus * 1000 / count) / 1000
    if resources.memory_bytes:
        shares["mem_limit"] = resources.memory_bytes // count
    if resources.pids:
        shares["pids_limit"] = resources.pids // count
    for key, least in (("cpus", MIN_CPUS), ("mem_limit", MIN_MEMORY), ("pids_limit", 1)):
        if key in shares and shares[key] < least:
            raise EnvironmentRefused(
                f"compose file refused: services: this preview's {key} budget of "
                f"{limits[key]} shared by {count} services leaves less than {least} each"
            )
    own = {
        "cpus": float(service["cpus"]) if "cpus" in service else None,
        "mem_limit": parse_memory(service["mem_limit"]) if "mem_limit" in service else None,
        "pids_limit": service.get("pids_limit"),
    }
    return {
        key: share if own[key] is None else min(share, own[key]) for key, share in shares.items()
    }


def resource_caps(resources: Resources) -> Caps:
    """The most a compose file may ask for: the environment's own (effective) limits."""
    return Caps(cpus=resources.cpus, memory_bytes=resources.memory_bytes, pids=resources.pids)


def _container_port(entry: Any) -> Any:
    """The container side of a ``ports`` entry (``8080``, ``"80:8080/tcp"``, long syntax)."""
    if isinstance(entry, Mapping):
        target = entry.get("target")
        protocol = entry.get("protocol")
        return f"{target}/{protocol}" if protocol else target
    if isinstance(entry, str):
        port, slash, protocol = entry.partition("/")
        return port.rsplit(":", 1)[-1] + slash + protocol
    return entry


def _without_routing_labels(labels: Any) -> Any:
    """``labels`` (mapping or ``key=value`` list) minus every key the agent alone writes.

    The policy's own test (any case, surrounding blanks) so that nothing it would refuse
    gets through when an admin allowed ``labels`` unchecked.
    """
    if isinstance(labels, Mapping):
        return {key: value for key, value in labels.items() if not is_routing_label(str(key))}
    if isinstance(labels, list):
        return [item for item in labels if not is_routing_label(str(item).partition("=")[0])]
    return labels


def sanitized_compose(document: Mapping[str, Any]) -> dict[str, Any]:
    """A checked compose document with the agent's rules applied, whatever was allowed.

    No routing labels but the agent's own; no published ports (``ports`` become
    ``expose``: the agent publishes the routed port itself); limits written the way both
    compose v1 and v2 apply them (``deploy.resources.limits`` moved to ``cpus``,
    ``mem_limit`` and ``pids_limit``); no variable of the agent's environment (compose
    would substitute ``${HOME}`` or ``$DOCKER_HOST`` from it): every value is literal.
    """
    result = copy.deepcopy(dict(document))
    for service in (result.get("services") or {}).values():
        if "labels" in service:
            service["labels"] = _without_routing_labels(service["labels"])
        ports = service.pop("ports", None) or []
        if ports:
            service["expose"] = [*(service.get("expose") or []), *map(_container_port, ports)]
        deploy = service.get("deploy")
        if isinstance(deploy, dict) and isinstance(deploy.get("resources"), dict):
            limits = deploy["resources"].pop("limits", None) or {}
            for key, deploy_key in LIMIT_KEYS:
                if deploy_key in limits and key not in service:
                    value = limits[deploy_key]
                    service[key] = float(value) if key == "cpus" else value
            if not deploy["resources"]:
                del deploy["resources"]
            if not deploy:
                del service["deploy"]
    for section in ("volumes", "networks"):
        for item in (result.get(section) or {}).values():
            if isinstance(item, dict) and "labels" in item:
                item["labels"] = _without_routing_labels(item["labels"])
    literal: dict[str, Any] = _without_interpolation(result)
    return literal


def _without_interpolation(value: Any) -> Any:
    """``value`` with every string value made literal for compose (keys are never
    interpolated, so they stay): a lone ``$`` becomes ``$$``, and a ``$$`` (compose's
    own escape for a literal ``$``) is kept, so ``${HOME}`` reaches the container as
    written instead of the agent's home directory, and ``$$X`` still means ``$X``."""
    if isinstance(value, str):
        return _DOLLAR.sub("$$", value)
    if isinstance(value, Mapping):
        return {key: _without_interpolation(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_interpolation(item) for item in value]
    return value


def compose_images(document: Mapping[str, Any]) -> list[str]:
    """Each image a sanitised compose document runs, once (``$$`` read back as the ``$``
    compose makes of it): the agent pulls and inspects them all before ``compose up``."""
    images: list[str] = []
    for service in (document.get("services") or {}).values():
        image = service.get("image") if isinstance(service, Mapping) else None
        if isinstance(image, str) and image.replace("$$", "$") not in images:
            images.append(image.replace("$$", "$"))
    return images
