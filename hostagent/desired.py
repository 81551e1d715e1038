"""The desired state: parsed and validated strictly, hashed, and turned into labels.

Strict on purpose, per environment: a snapshot whose frame does not validate raises and the
agent keeps its last good state; one environment that does not validate is refused on its
own (left out of the plan, never torn down, reported with its reason) and the others are
served, so one bad compose file never freezes a host.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from contracts import envkinds, logdrivers
from contracts.logdrivers import LogDriver
from contracts.yamlsafe import YamlRefused, load_yaml
from hostagent.errors import InvalidDesiredState

log = logging.getLogger(__name__)

ENV_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
HOST_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
DIGEST_IMAGE_RE = re.compile(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"@sha256:[0-9a-f]{64}"
)
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
MEMORY_RE = re.compile(r"([0-9]+)([bkmg]?)", re.IGNORECASE)
MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
COMPOSE_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
TRAEFIK_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
COMPOSE_SERVICE_RE = re.compile(r"[a-zA-Z0-9._-]+")
RESTART_RE = re.compile(r"no|always|unless-stopped|on-failure(?::[0-9]{1,4})?")
SHA_RE = re.compile(r"[0-9a-f]{40}")
# user:bcrypt, as htpasswd -B writes it; nothing else reaches Traefik's basicAuth label.
HTPASSWD_RE = re.compile(r"[A-Za-z0-9._-]{1,64}:\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
MAX_HEALTH_TIMEOUT = 3600.0
# Containers of one environment on one host; the control plane caps it lower.
MAX_REPLICAS = 50

# production, preview, or another a service was given (staging): contracts.envkinds.
Kind = str
Mode = Literal["container", "compose"]


@dataclass(frozen=True)
class Routing:
    """Where Traefik takes requests in and which resolver signs their certificates."""

    entrypoint: str = "websecure"
    cert_resolver: str | None = "letsencrypt"


@dataclass(frozen=True)
class HealthCheck:
    """An HTTP GET on the container port that must answer below 500 within timeout."""

    path: str
    timeout: float


@dataclass(frozen=True)
class Resources:
    """Limits and restart policy applied to every container of the environment."""

    cpus: float | None = None
    memory: str | None = None
    restart: str = "unless-stopped"
    pids: int | None = None

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else memory_bytes(self.memory)


@dataclass(frozen=True)
class PreviewLimits:
    """What a whole preview may use at most (its containers share it) when its desired
    state asks for no tighter limit, and how many compose services it may run."""

    cpus: float = 1.0
    memory: str = "512m"
    pids: int = 256
    services: int = 16

    def tighten(self, resources: Resources) -> Resources:
        """``resources`` with each limit no looser than these defaults."""
        cpus = self.cpus if resources.cpus is None else min(resources.cpus, self.cpus)
        memory = resources.memory
        if memory is None or memory_bytes(memory) > memory_bytes(self.memory):
            memory = self.memory
        pids = self.pids if resources.pids is None else min(resources.pids, self.pids)
        return Resources(cpus=cpus, memory=memory, restart=resources.restart, pids=pids)


def memory_bytes(text: str) -> int:
    """Bytes of a Docker memory size (``256m``, ``1g``, ``1048576``); ValueError otherwise."""
    match = MEMORY_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a memory size: {text!r}")
    return int(match.group(1)) * MEMORY_UNITS[match.group(2).lower()]


@dataclass(frozen=True)
class RegistryAuth:
    """Pull credentials; the password never shows in a repr."""

    address: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Protection:
    """Who may reach an environment through Traefik: holders of a basic-auth login
    (htpasswd lines) or clients from the listed networks; one of the two is set."""

    basic_auth: tuple[str, ...] = field(default=(), repr=False)
    ip_allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class DesiredEnvironment:
    """One environment the host should run, exactly as the control plane wants it."""

    name: str
    kind: Kind
    service: str
    deployment_id: int
    build_id: int | None
    commit_sha: str | None
    mode: Mode
    image: str | None
    compose: str | None
    port: int | None
    routed_service: str | None
    domains: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    health_check: HealthCheck | None
    resources: Resources
    registry: RegistryAuth | None
    compose_services: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    compose_allow: frozenset[str] = frozenset()
    protection: Protection | None = None
    # Where Docker forwards its output besides the local copy (None: Docker's default).
    log_driver: LogDriver | None = None
    # How many containers of it this host runs (single-container environments only).
    replicas: int = 1

    @property
    def allowed_compose_keys(self) -> frozenset[str]:
        """Extra compose keys an admin allowed; never a preview's, whatever the snapshot says."""
        return self.compose_allow if envkinds.runs_like_production(self.kind) else frozenset()


@dataclass(frozen=True)
class RefusedEnvironment:
    """An environment kept exactly as it runs: one of the snapshot that did not validate
    (reported to the control plane), or one the control plane ``withheld`` because it
    could not render it (it knows already: not reported)."""

    name: str
    deployment_id: int | None
    reason: str
    withheld: bool = False


@dataclass(frozen=True)
class Route:
    """Another compose service with a subdomain of its own (``<service>.<domain>``)."""

    service: str
    port: int
    domains: tuple[str, ...]


@dataclass(frozen=True)
class DesiredState:
    """A full snapshot for this host; ``complete`` says an absence means "remove"."""

    host: str
    generation: int
    complete: bool
    routing: Routing
    environments: tuple[DesiredEnvironment, ...]
    refused: tuple[RefusedEnvironment, ...] = ()

    def environment(self, name: str) -> DesiredEnvironment | None:
        return next((env for env in self.environments if env.name == name), None)

    def with_preview_limits(self, limits: PreviewLimits) -> DesiredState:
        """The same snapshot with every preview's resources tightened to ``limits``.

        A preview with more compose services than ``limits.services`` is refused on its
        own: its budget split that many ways would leave each next to nothing.
        """
        environments: list[DesiredEnvironment] = []
        refused = list(self.refused)
        for env in self.environments:
            if env.kind != "preview":
                environments.append(env)
            elif len(env.compose_services) > limits.services:
                reason = (
                    f"compose file refused: services: a preview runs at most "
                    f"{limits.services} services, this file has {len(env.compose_services)}"
                )
                log.warning("environment %s: %s", env.name, reason)
                refused.append(RefusedEnvironment(env.name, env.deployment_id, reason))
            else:
                environments.append(
                    dataclasses.replace(env, resources=limits.tighten(env.resources))
                )
        return dataclasses.replace(self, environments=tuple(environments), refused=tuple(refused))


# ---------------------------------------------------------------------------------------
# Validation helpers: each names the field that is wrong.
# ---------------------------------------------------------------------------------------


def _fail(where: str, what: str) -> InvalidDesiredState:
    return InvalidDesiredState(f"desired state: {where} {what}")


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "must be an object")
    return value


def _str(value: object, where: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        raise _fail(where, "must be a non-empty string")
    return value


def _opt_str(value: object, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _int(value: object, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(where, f"must be an integer >= {minimum}")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _fail(where, "must be a positive number")
    return float(value)


def valid_domain(domain: str) -> bool:
    """RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens."""
    if not domain or len(domain) > 253 or domain != domain.lower():
        return False
    labels = domain.split(".")
    return len(labels) >= 1 and all(HOST_LABEL_RE.fullmatch(label) for label in labels)


def _domains(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _fail(where, "must be a list")
    domains: list[str] = []
    for index, item in enumerate(value):
        text = _str(item, f"{where}[{index}]").strip().lower().rstrip(".")
        if not valid_domain(text):
            raise _fail(f"{where}[{index}]", "is not a valid host name")
        if text not in domains:
            domains.append(text)
    return tuple(domains)


def _env_vars(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    mapping = _obj(value, where)
    env: dict[str, str] = {}
    for key, item in mapping.items():
        if not isinstance(key, str) or not ENV_KEY_RE.fullmatch(key):
            raise _fail(where, "has a key that is not an environment variable name")
        if not isinstance(item, str) or "\x00" in item:
            # The value is a secret maybe: name the key only.
            raise _fail(f"{where}.{key}", "must be a string")
        env[key] = item
    return env


def _health(value: object, where: str) -> HealthCheck | None:
    if value is None:
        return None
    data = _obj(value, where)
    path = _str(data.get("path", "/"), f"{where}.path")
    if not path.startswith("/") or any(ch.isspace() or ord(ch) < 32 for ch in path):
        raise _fail(f"{where}.path", "must be an absolute URL path without spaces")
    timeout = _number(data.get("timeout", 60), f"{where}.timeout")
    if timeout > MAX_HEALTH_TIMEOUT:
        raise _fail(f"{where}.timeout", f"must be at most {MAX_HEALTH_TIMEOUT:g}")
    return HealthCheck(path=path, timeout=timeout)


def _resources(value: object, where: str) -> Resources:
    if value is None:
        return Resources()
    data = _obj(value, where)
    cpus = data.get("cpus")
    memory = data.get("memory")
    restart = data.get("restart") or "unless-stopped"
    pids = data.get("pids")
    if cpus is not None:
        cpus = _number(cpus, f"{where}.cpus")
    if memory is not None:
        memory = _str(memory, f"{where}.memory").strip().lower()
        if not MEMORY_RE.fullmatch(memory):
            raise _fail(f"{where}.memory", "must look like 256m, 1g or a number of bytes")
    if pids is not None:
        pids = _int(pids, f"{where}.pids", minimum=1)
    restart = _str(restart, f"{where}.restart")
    if not RESTART_RE.fullmatch(restart):
        raise _fail(f"{where}.restart", "must be no, always, unless-stopped or on-failure[:N]")
    return Resources(cpus=cpus, memory=memory, restart=restart, pids=pids)


def _registry(value: object, where: str) -> RegistryAuth | None:
    if value is None:
        return None
    data = _obj(value, where)
    return RegistryAuth(
        address=_str(data.get("address"), f"{where}.address"),
        username=_opt_str(data.get("username"), f"{where}.username"),
        password=_opt_str(data.get("password"), f"{where}.password"),
    )


def compose_services(text: str, where: str = "compose") -> tuple[str, ...]:
    """The service names of a compose file; raises if it is not a usable compose file."""
    try:
        data = load_yaml(text)
    except YamlRefused as exc:
        raise _fail(where, f"is refused: {exc}") from None
    services = _obj(data, where).get("services")
    if not isinstance(services, dict) or not services:
        raise _fail(f"{where}.services", "must be a non-empty mapping")
    for name, spec in services.items():
        if not isinstance(name, str) or not COMPOSE_SERVICE_RE.fullmatch(name):
            raise _fail(f"{where}.services", f"has an invalid service name {name!r}")
        if not isinstance(spec, dict):
            raise _fail(f"{where}.services.{name}", "must be a mapping")
    return tuple(sorted(services))


def parse_environment(value: object, where: str) -> DesiredEnvironment:
    """Validate one environment of the snapshot."""
    data = _obj(value, where)
    name = _str(data.get("name"), f"{where}.name")
    if not ENV_NAME_RE.fullmatch(name):
        raise _fail(f"{where}.name", "must be 1-63 characters of [a-z0-9-]")
    where = f"environment {name!r}:"
    kind = data.get("kind")
    if not envkinds.is_kind(kind):
        raise _fail(f"{where} kind", "must be production, preview or a label such as staging")
    mode = data.get("mode")
    if mode not in ("container", "compose"):
        raise _fail(f"{where} mode", "must be container or compose")
    port = data.get("port")
    if port is not None:
        port = _int(port, f"{where} port", minimum=1)
        if port > 65535:
            raise _fail(f"{where} port", "must be at most 65535")
    commit_sha = _opt_str(data.get("commit_sha"), f"{where} commit_sha")
    if commit_sha is not None and not SHA_RE.fullmatch(commit_sha):
        raise _fail(f"{where} commit_sha", "must be 40 lower-case hex digits")
    build_id = data.get("build_id")
    image: str | None = None
    compose: str | None = None
    routed: str | None = None
    services: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    if mode == "container":
        image = _str(data.get("image"), f"{where} image")
        if not DIGEST_IMAGE_RE.fullmatch(image):
            raise _fail(f"{where} image", "must be a repository pinned by @sha256 digest")
    else:
        compose = _str(data.get("compose"), f"{where} compose")
        services = compose_services(compose, f"{where} compose")
        routed = _opt_str(data.get("routed_service"), f"{where} routed_service")
        if routed is not None and routed not in services:
            raise _fail(f"{where} routed_service", "names no service of the compose file")
        routes = _routes(data.get("routes", []), services, f"{where} routes")
    replicas = _int(data.get("replicas", 1), f"{where} replicas", minimum=1)
    if replicas > MAX_REPLICAS:
        raise _fail(f"{where} replicas", f"must be at most {MAX_REPLICAS}")
    if mode == "compose" and replicas != 1:
        raise _fail(f"{where} replicas", "must be 1 for a compose environment")
    return DesiredEnvironment(
        name=name,
        kind=kind,
        service=_str(data.get("service"), f"{where} service"),
        deployment_id=_int(data.get("deployment_id"), f"{where} deployment_id", minimum=1),
        build_id=None if build_id is None else _int(build_id, f"{where} build_id"),
        commit_sha=commit_sha,
        mode=mode,
        image=image,
        compose=compose,
        port=port,
        routed_service=routed,
        domains=_domains(data.get("domains", []), f"{where} domains"),
        env=_env_vars(data.get("env"), f"{where} env"),
        health_check=_health(data.get("health_check"), f"{where} health_check"),
        resources=_resources(data.get("resources"), f"{where} resources"),
        registry=_registry(data.get("registry"), f"{where} registry"),
        compose_services=services,
        routes=routes,
        compose_allow=_compose_allow(data.get("compose_allow"), f"{where} compose_allow"),
        protection=_protection(data.get("protection"), f"{where} protection"),
        log_driver=_log_driver(data.get("log_driver"), f"{where} log_driver"),
        replicas=replicas,
    )


def _protection(value: object, where: str) -> Protection | None:
    if value is None:
        return None
    data = _obj(value, where)
    users = data.get("basic_auth", [])
    networks = data.get("ip_allow", [])
    if not isinstance(users, list) or not isinstance(networks, list):
        raise _fail(where, "basic_auth and ip_allow must be lists")
    if bool(users) == bool(networks):
        raise _fail(where, "must have either basic_auth or ip_allow")
    for index, line in enumerate(users):
        # The line holds a hash: say where it is, never what it is.
        if not isinstance(line, str) or not HTPASSWD_RE.fullmatch(line):
            raise _fail(f"{where}.basic_auth[{index}]", "must be user:bcrypt")
    cidrs: list[str] = []
    for index, text in enumerate(networks):
        try:
            cidrs.append(str(ipaddress.ip_network(_str(text, where), strict=False)))
        except ValueError:
            raise _fail(f"{where}.ip_allow[{index}]", "must be a CIDR") from None
    return Protection(basic_auth=tuple(users), ip_allow=tuple(cidrs))


def _log_driver(value: object, where: str) -> LogDriver | None:
    """The snapshot's logging driver, checked again by the rules the control plane uses."""
    if value is None:
        return None
    try:
        return logdrivers.parse(value, where)
    except logdrivers.LogDriverRefused as exc:
        raise InvalidDesiredState(f"desired state: {exc}") from None


def _compose_allow(value: object, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise _fail(where, "must be a list")
    keys = frozenset(_str(item, f"{where}[{index}]") for index, item in enumerate(value))
    bad = sorted(key for key in keys if not COMPOSE_KEY_RE.fullmatch(key))
    if bad:
        raise _fail(where, f"names something that is not a compose key: {bad[0]!r}")
    return keys


def _routes(value: object, services: tuple[str, ...], where: str) -> tuple[Route, ...]:
    if not isinstance(value, list):
        raise _fail(where, "must be a list")
    routes = []
    for index, item in enumerate(value):
        data = _obj(item, f"{where}[{index}]")
        service = _str(data.get("service"), f"{where}[{index}].service")
        if service not in services:
            raise _fail(f"{where}[{index}].service", "names no service of the compose file")
        port = _int(data.get("port"), f"{where}[{index}].port", minimum=1)
        if port > 65535:
            raise _fail(f"{where}[{index}].port", "must be at most 65535")
        routes.append(Route(service, port, _domains(data.get("domains", []), f"{where}[{index}]")))
    return tuple(routes)


def _refusal(value: object, index: int, exc: InvalidDesiredState) -> RefusedEnvironment | None:
    """What to report for an environment that did not validate; None if it has no name.

    Without a valid name nothing the agent runs can belong to it, so there is nothing to
    keep and nobody to tell.
    """
    data = value if isinstance(value, dict) else {}
    name = data.get("name")
    if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
        log.warning("desired state: environments[%d] refused: %s", index, exc)
        return None
    deployment_id = data.get("deployment_id")
    if isinstance(deployment_id, bool) or not isinstance(deployment_id, int):
        deployment_id = None
    log.warning("desired state: environment %s refused: %s", name, exc)
    return RefusedEnvironment(name, deployment_id, str(exc))


def _withheld(value: object) -> list[RefusedEnvironment]:
    """The environments the control plane left out of this snapshot on purpose: whatever
    runs for them stays as it is (never torn down), and nothing is started."""
    if not isinstance(value, list):
        raise _fail("withheld", "must be a list")
    withheld = []
    for index, item in enumerate(value):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            log.warning("desired state: withheld[%d] names no environment: ignored", index)
            continue
        reason = item.get("reason") if isinstance(item, dict) else None
        text = reason if isinstance(reason, str) else "withheld by the control plane"
        withheld.append(RefusedEnvironment(name, None, text, withheld=True))
    return withheld


def parse_desired_state(value: object) -> DesiredState:
    """Validate a snapshot: its frame strictly, each environment on its own.

    A bad frame raises InvalidDesiredState (the agent keeps its last good state). A bad
    environment lands in ``refused`` with its reason; so do all entries of a name the
    snapshot gives twice. An empty ``environments`` list is only accepted with
    ``"complete": true``: an empty answer the server did not vouch for must never tear
    the host down.
    """
    data = _obj(value, "body")
    generation = _int(data.get("generation"), "generation")
    complete = data.get("complete") is True
    raw_envs = data.get("environments")
    if not isinstance(raw_envs, list):
        raise _fail("environments", "must be a list")
    if not raw_envs and not complete:
        raise _fail("environments", "is empty and the state is not marked complete")
    routing_data = _obj(data.get("routing") or {}, "routing")
    entrypoint = _str(routing_data.get("entrypoint", "websecure"), "routing.entrypoint")
    resolver = routing_data.get("cert_resolver")
    resolver = None if resolver in (None, "") else _str(resolver, "routing.cert_resolver")
    for label, text in (("entrypoint", entrypoint), ("cert_resolver", resolver)):
        if text is not None and not TRAEFIK_NAME_RE.fullmatch(text):
            raise _fail(f"routing.{label}", "must be letters, digits, '-' or '_'")
    host = _str(data.get("host"), "host")
    parsed: list[DesiredEnvironment] = []
    refused: dict[str, RefusedEnvironment] = {}
    for index, item in enumerate(raw_envs):
        try:
            parsed.append(parse_environment(item, f"environments[{index}]"))
        except InvalidDesiredState as exc:
            refusal = _refusal(item, index, exc)
            if refusal is not None:
                refused.setdefault(refusal.name, refusal)
    for withheld in _withheld(data.get("withheld", [])):
        refused.setdefault(withheld.name, withheld)
    counts = Counter([env.name for env in parsed] + list(refused))
    for env in parsed:
        if counts[env.name] > 1 and env.name not in refused:
            reason = f"desired state: environment {env.name!r} is named twice in the snapshot"
            log.warning("%s", reason)
            refused[env.name] = RefusedEnvironment(env.name, env.deployment_id, reason)
    return DesiredState(
        host=host,
        generation=generation,
        complete=complete,
        routing=Routing(entrypoint=entrypoint, cert_resolver=resolver),
        environments=tuple(env for env in parsed if env.name not in refused),
        refused=tuple(refused.values()),
    )


# ---------------------------------------------------------------------------------------
# Config hash and labels
# ---------------------------------------------------------------------------------------


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
