"""The Traefik labels that route an environment's domains to its container."""

from __future__ import annotations

from contracts.agentwire import ENV_NAME_RE, HealthCheck, Protection, Routing, valid_domain


def host_rule(domains: tuple[str, ...] | list[str]) -> str:
    """A Traefik rule matching any of ``domains``; each is checked before it is quoted."""
    for domain in domains:
        if not valid_domain(domain):
            raise ValueError(f"not a valid host name for a Traefik rule: {domain!r}")
    return " || ".join(f"Host(`{domain}`)" for domain in domains)


def traefik_labels(
    name: str,
    domains: tuple[str, ...],
    port: int | None,
    routing: Routing,
    health_check: HealthCheck | None = None,
    *,
    network: str = "",
    protection: Protection | None = None,
) -> dict[str, str]:
    """Docker-provider labels routing ``domains`` to ``port``; empty if nothing to route.

    ``network``: the proxy network, which Traefik must use to reach a container that is
    on several networks (a compose service keeps its project's network too).
    ``protection``: a basicAuth or ipAllowList middleware of this router's own, on it.

    Old and new containers of one environment carry the same router and service names,
    so during a switch Traefik load-balances over both; its own health check on the
    service keeps requests away from a new container until it answers.
    """
    if not domains or port is None:
        return {}
    if not ENV_NAME_RE.fullmatch(name):
        raise ValueError(f"not a valid router name: {name!r}")
    router = f"traefik.http.routers.{name}"
    service = f"traefik.http.services.{name}"
    labels = {
        "traefik.enable": "true",
        f"{router}.rule": host_rule(domains),
        f"{router}.entrypoints": routing.entrypoint,
        f"{router}.service": name,
        f"{service}.loadbalancer.server.port": str(port),
    }
    if routing.cert_resolver:
        labels[f"{router}.tls"] = "true"
        labels[f"{router}.tls.certresolver"] = routing.cert_resolver
    if health_check is not None:
        labels[f"{service}.loadbalancer.healthcheck.path"] = health_check.path
        labels[f"{service}.loadbalancer.healthcheck.interval"] = "5s"
    if network:
        labels["traefik.docker.network"] = network
    if protection is not None:
        middleware = f"traefik.http.middlewares.{name}-protect"
        if protection.basic_auth:
            labels[f"{middleware}.basicauth.users"] = ",".join(protection.basic_auth)
        else:
            labels[f"{middleware}.ipallowlist.sourcerange"] = ",".join(protection.ip_allow)
        labels[f"{router}.middlewares"] = f"{name}-protect"
    return labels
