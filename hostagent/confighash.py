"""The config hash: what must recreate an environment's containers when it changes.

Planning compares it with the hash label of what runs; the report and the failure memory
key on it. Deliberately blind to the deployment id: a redeploy of the same image with
the same settings restarts nothing.
"""

from __future__ import annotations

import hashlib
import json

from contracts.agentwire import DesiredEnvironment, Routing


def config_hash(
    env: DesiredEnvironment,
    publish_host: str = "",
    routing: Routing | None = None,
    *,
    proxy_network: str = "",
) -> str:
    """sha256 over everything whose change must recreate the container(s), the host's
    placement too (``publish_host``, ``proxy_network``: set later, it must attach them).

    The deployment id is left out on purpose: a redeploy of the same image with the same
    settings changes nothing that runs, so nothing is restarted.
    """
    routing = routing or Routing()
    material = {
        "name": env.name,
        "kind": env.kind,
        "mode": env.mode,
        "image": env.image,
        "compose": env.compose,
        "port": env.port,
        "routed_service": env.routed_service,
        "routes": [[r.service, r.port, list(r.domains)] for r in env.routes],
        "domains": list(env.domains),
        "env": sorted(env.env.items()),
        "health_check": None
        if env.health_check is None
        else [env.health_check.path, env.health_check.timeout],
        "resources": [env.resources.cpus, env.resources.memory, env.resources.restart],
        "publish_host": publish_host,
        "routing": [routing.entrypoint, routing.cert_resolver],
    }
    # Newer fields count only when set, so an agent upgrade restarts nothing that runs.
    if env.resources.pids is not None:
        material["pids"] = env.resources.pids
    if env.allowed_compose_keys:
        material["compose_allow"] = sorted(env.allowed_compose_keys)
    if proxy_network:
        material["proxy_network"] = proxy_network
    if env.protection is not None:
        material["protection"] = [f"basic_auth:{line}" for line in env.protection.basic_auth] + [
            f"ip_allow:{cidr}" for cidr in env.protection.ip_allow
        ]
    if env.log_driver is not None:
        options = sorted(env.log_driver.options.items())
        material["log_driver"] = [env.log_driver.driver, *(f"{k}={v}" for k, v in options)]
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()
