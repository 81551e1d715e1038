"""What the control plane and a host agent say to each other, as typed values.

``GET /v1/agent/desired-state`` answers a :class:`DesiredState`; ``POST /v1/agent/status``
carries an :class:`AgentReport`. Each side builds or reads these with ``from_json`` and
``to_json``, which check at the edge and raise :class:`WireError` naming the bad field;
inside, both work on the types.

The snapshot is strict per environment: a frame that does not validate raises (the agent
keeps its last good state), while one environment that does not validate is refused on
its own (``DesiredState.refused``, reported with its reason) and the others are served,
so one bad compose file never freezes a host.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from contracts import envkinds, logdrivers
from contracts.logdrivers import LogDriver
from contracts.yamlsafe import YamlRefused, load_yaml

log = logging.getLogger(__name__)

JsonObject = dict[str, object]

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

Mode = Literal["container", "compose"]
MODES: tuple[Mode, ...] = ("container", "compose")


class WireError(ValueError):
    """A body that does not follow the contract; the message names the field."""


class ReportState(StrEnum):
    """Where one environment stands on a host, as its agent reports it."""

    RUNNING = "running"
    STARTING = "starting"
    FAILED = "failed"
    REFUSED = "refused"
    REMOVED = "removed"


# ---------------------------------------------------------------------------------------
# Field checks: each names the field that is wrong.
# ---------------------------------------------------------------------------------------


def _fail(where: str, what: str, subject: str = "desired state") -> WireError:
    return WireError(f"{subject}: {where} {what}")


def _obj(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise _fail(where, "must be an object")
    return value


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise _fail(where, "must be a list")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, "must be a non-empty string")
    return value


def _opt_str(value: object, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _int(value: object, where: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(where, f"must be an integer >= {minimum}")
    if maximum is not None and value > maximum:
        raise _fail(where, f"must be at most {maximum}")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _fail(where, "must be a positive number")
    return float(value)


def memory_bytes(text: str) -> int:
    """Bytes of a Docker memory size (``256m``, ``1g``, ``1048576``); ValueError otherwise."""
    match = MEMORY_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a memory size: {text!r}")
    return int(match.group(1)) * MEMORY_UNITS[match.group(2).lower()]


def valid_domain(domain: str) -> bool:
    """RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens."""
    if not domain or len(domain) > 253 or domain != domain.lower():
        return False
    return all(HOST_LABEL_RE.fullmatch(label) for label in domain.split("."))


def _domains(value: object, where: str) -> tuple[str, ...]:
    domains: list[str] = []
    for index, item in enumerate(_list(value, where)):
        text = _str(item, f"{where}[{index}]").strip().lower().rstrip(".")
        if not valid_domain(text):
            raise _fail(f"{where}[{index}]", "is not a valid host name")
        if text not in domains:
            domains.append(text)
    return tuple(domains)


def compose_services(text: str, where: str = "compose") -> tuple[str, ...]:
    """The service names of a compose file; WireError if it is not a usable compose file."""
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


# ---------------------------------------------------------------------------------------
# The desired-state snapshot
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Routing:
    """Where Traefik takes requests in and which resolver signs their certificates."""

    entrypoint: str = "websecure"
    cert_resolver: str | None = "letsencrypt"

    @classmethod
    def from_json(cls, value: object) -> Routing:
        data = _obj(value or {}, "routing")
        entrypoint = _str(data.get("entrypoint", "websecure"), "routing.entrypoint")
        resolver = data.get("cert_resolver")
        resolver = None if resolver in (None, "") else _str(resolver, "routing.cert_resolver")
        for label, text in (("entrypoint", entrypoint), ("cert_resolver", resolver)):
            if text is not None and not TRAEFIK_NAME_RE.fullmatch(text):
                raise _fail(f"routing.{label}", "must be letters, digits, '-' or '_'")
        return cls(entrypoint, resolver)

    def to_json(self) -> JsonObject:
        return {"entrypoint": self.entrypoint, "cert_resolver": self.cert_resolver}


@dataclass(frozen=True)
class HealthCheck:
    """An HTTP GET on the container port that must answer below 500 within timeout."""

    path: str
    timeout: float

    @classmethod
    def from_json(cls, value: object, where: str) -> HealthCheck:
        data = _obj(value, where)
        path = _str(data.get("path", "/"), f"{where}.path")
        if not path.startswith("/") or any(ch.isspace() or ord(ch) < 32 for ch in path):
            raise _fail(f"{where}.path", "must be an absolute URL path without spaces")
        timeout = _number(data.get("timeout", 60), f"{where}.timeout")
        if timeout > MAX_HEALTH_TIMEOUT:
            raise _fail(f"{where}.timeout", f"must be at most {MAX_HEALTH_TIMEOUT:g}")
        return cls(path, timeout)

    def to_json(self) -> JsonObject:
        timeout = int(self.timeout) if self.timeout.is_integer() else self.timeout
        return {"path": self.path, "timeout": timeout}


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

    @classmethod
    def from_json(cls, value: object, where: str) -> Resources:
        data = _obj(value, where)
        cpus = None if data.get("cpus") is None else _number(data["cpus"], f"{where}.cpus")
        memory = data.get("memory")
        if memory is not None:
            memory = _str(memory, f"{where}.memory").strip().lower()
            if not MEMORY_RE.fullmatch(memory):
                raise _fail(f"{where}.memory", "must look like 256m, 1g or a number of bytes")
        pids = data.get("pids")
        if pids is not None:
            pids = _int(pids, f"{where}.pids", minimum=1)
        restart = _str(data.get("restart") or "unless-stopped", f"{where}.restart")
        if not RESTART_RE.fullmatch(restart):
            raise _fail(f"{where}.restart", "must be no, always, unless-stopped or on-failure[:N]")
        return cls(cpus=cpus, memory=memory, restart=restart, pids=pids)

    def to_json(self) -> JsonObject:
        data: JsonObject = {"cpus": self.cpus, "memory": self.memory, "restart": self.restart}
        if self.pids is not None:
            data["pids"] = self.pids
        return data


@dataclass(frozen=True)
class RegistryAuth:
    """Pull credentials; the password never shows in a repr."""

    address: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, value: object, where: str) -> RegistryAuth:
        data = _obj(value, where)
        return cls(
            address=_str(data.get("address"), f"{where}.address"),
            username=_opt_str(data.get("username"), f"{where}.username"),
            password=_opt_str(data.get("password"), f"{where}.password"),
        )

    def to_json(self) -> JsonObject:
        return {"address": self.address, "username": self.username, "password": self.password}


@dataclass(frozen=True)
class Protection:
    """Who may reach an environment through Traefik: holders of a basic-auth login
    (htpasswd lines) or clients from the listed networks; one of the two is set."""

    basic_auth: tuple[str, ...] = field(default=(), repr=False)
    ip_allow: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, value: object, where: str) -> Protection:
        data = _obj(value, where)
        users = data.get("basic_auth", [])
        networks = data.get("ip_allow", [])
        if not isinstance(users, list) or not isinstance(networks, list):
            raise _fail(where, "basic_auth and ip_allow must be lists")
        if bool(users) == bool(networks):
            raise _fail(where, "must have either basic_auth or ip_allow")
        lines: list[str] = []
        for index, line in enumerate(users):
            # The line holds a hash: say where it is, never what it is.
            if not isinstance(line, str) or not HTPASSWD_RE.fullmatch(line):
                raise _fail(f"{where}.basic_auth[{index}]", "must be user:bcrypt")
            lines.append(line)
        cidrs: list[str] = []
        for index, text in enumerate(networks):
            try:
                cidrs.append(str(ipaddress.ip_network(_str(text, where), strict=False)))
            except ValueError:
                raise _fail(f"{where}.ip_allow[{index}]", "must be a CIDR") from None
        return cls(basic_auth=tuple(lines), ip_allow=tuple(cidrs))

    def to_json(self) -> JsonObject:
        if self.basic_auth:
            return {"basic_auth": list(self.basic_auth)}
        return {"ip_allow": list(self.ip_allow)}


@dataclass(frozen=True)
class Route:
    """Another compose service with a subdomain of its own (``<service>.<domain>``)."""

    service: str
    port: int
    domains: tuple[str, ...]

    @classmethod
    def from_json(cls, value: object, services: tuple[str, ...], where: str) -> Route:
        data = _obj(value, where)
        service = _str(data.get("service"), f"{where}.service")
        if service not in services:
            raise _fail(f"{where}.service", "names no service of the compose file")
        port = _int(data.get("port"), f"{where}.port", minimum=1, maximum=65535)
        return cls(service, port, _domains(data.get("domains", []), where))

    def to_json(self) -> JsonObject:
        return {"service": self.service, "port": self.port, "domains": list(self.domains)}


def _env_vars(value: object, where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, item in _obj(value or {}, where).items():
        if not ENV_KEY_RE.fullmatch(key):
            raise _fail(where, "has a key that is not an environment variable name")
        if not isinstance(item, str) or "\x00" in item:
            # The value is a secret maybe: name the key only.
            raise _fail(f"{where}.{key}", "must be a string")
        env[key] = item
    return env


def _compose_allow(value: object, where: str) -> frozenset[str]:
    items = _list(value or [], where)
    keys = frozenset(_str(item, f"{where}[{index}]") for index, item in enumerate(items))
    bad = sorted(key for key in keys if not COMPOSE_KEY_RE.fullmatch(key))
    if bad:
        raise _fail(where, f"names something that is not a compose key: {bad[0]!r}")
    return keys


def _log_driver(value: object, where: str) -> LogDriver | None:
    """The snapshot's logging driver, checked again by the rules the control plane uses."""
    if value is None:
        return None
    try:
        return logdrivers.parse(value, where)
    except logdrivers.LogDriverRefused as exc:
        raise WireError(f"desired state: {exc}") from None


@dataclass(frozen=True)
class DesiredEnvironment:
    """One environment the host should run, exactly as the control plane wants it."""

    name: str
    kind: str  # production, preview, or a label such as staging: contracts.envkinds
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

    @classmethod
    def from_json(cls, value: object, where: str = "environment") -> DesiredEnvironment:
        """One environment of the snapshot, checked; ``where`` says which for an error."""
        data = _obj(value, where)
        name = _str(data.get("name"), f"{where}.name")
        if not ENV_NAME_RE.fullmatch(name):
            raise _fail(f"{where}.name", "must be 1-63 characters of [a-z0-9-]")
        where = f"environment {name!r}:"
        kind = data.get("kind")
        if not envkinds.is_kind(kind):
            raise _fail(f"{where} kind", "must be production, preview or a label such as staging")
        mode = next((mode for mode in MODES if mode == data.get("mode")), None)
        if mode is None:
            raise _fail(f"{where} mode", "must be container or compose")
        port = data.get("port")
        if port is not None:
            port = _int(port, f"{where} port", minimum=1, maximum=65535)
        commit_sha = _opt_str(data.get("commit_sha"), f"{where} commit_sha")
        if commit_sha is not None and not SHA_RE.fullmatch(commit_sha):
            raise _fail(f"{where} commit_sha", "must be 40 lower-case hex digits")
        build_id = data.get("build_id")
        image = compose = routed = None
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
            routes = tuple(
                Route.from_json(item, services, f"{where} routes[{index}]")
                for index, item in enumerate(_list(data.get("routes", []), f"{where} routes"))
            )
        replicas = _int(data.get("replicas", 1), f"{where} replicas", minimum=1)
        if replicas > MAX_REPLICAS:
            raise _fail(f"{where} replicas", f"must be at most {MAX_REPLICAS}")
        if mode == "compose" and replicas != 1:
            raise _fail(f"{where} replicas", "must be 1 for a compose environment")
        health, registry, protection = (
            data.get("health_check"),
            data.get("registry"),
            data.get("protection"),
        )
        return cls(
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
            health_check=None
            if health is None
            else HealthCheck.from_json(health, f"{where} health_check"),
            resources=Resources.from_json(data.get("resources") or {}, f"{where} resources"),
            registry=None
            if registry is None
            else RegistryAuth.from_json(registry, f"{where} registry"),
            compose_services=services,
            routes=routes,
            compose_allow=_compose_allow(data.get("compose_allow"), f"{where} compose_allow"),
            protection=None
            if protection is None
            else Protection.from_json(protection, f"{where} protection"),
            log_driver=_log_driver(data.get("log_driver"), f"{where} log_driver"),
            replicas=replicas,
        )

    def to_json(self) -> JsonObject:
        """The snapshot entry, as ``GET /v1/agent/desired-state`` carries it."""
        data: JsonObject = {
            "name": self.name,
            "kind": self.kind,
            "service": self.service,
            "deployment_id": self.deployment_id,
            "build_id": self.build_id,
            "commit_sha": self.commit_sha,
            "mode": self.mode,
            "image": self.image,
            "compose": self.compose,
            "compose_allow": sorted(self.compose_allow),
            "port": self.port,
            "routed_service": self.routed_service,
            "routes": [route.to_json() for route in self.routes],
            "domains": list(self.domains),
            "env": dict(self.env),
            "health_check": None if self.health_check is None else self.health_check.to_json(),
            "resources": self.resources.to_json(),
            "registry": None if self.registry is None else self.registry.to_json(),
        }
        # Newer keys only when set: older agents and the pinned bodies never see them.
        if self.protection is not None:
            data["protection"] = self.protection.to_json()
        if self.replicas > 1:
            data["replicas"] = self.replicas
        if self.log_driver is not None:
            data["log_driver"] = self.log_driver.as_json()
        return data


@dataclass(frozen=True)
class RefusedEnvironment:
    """An environment kept exactly as it runs: one of the snapshot that did not validate
    (reported to the control plane), or one the control plane ``withheld`` because it
    could not render it (it knows already: not reported)."""

    name: str
    deployment_id: int | None
    reason: str
    withheld: bool = False


def _refusal(value: object, index: int, exc: WireError) -> RefusedEnvironment | None:
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
    withheld = []
    for index, item in enumerate(_list(value, "withheld")):
        data = item if isinstance(item, dict) else {}
        name = data.get("name")
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            log.warning("desired state: withheld[%d] names no environment: ignored", index)
            continue
        reason = data.get("reason")
        text = reason if isinstance(reason, str) else "withheld by the control plane"
        withheld.append(RefusedEnvironment(name, None, text, withheld=True))
    return withheld


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

    @classmethod
    def from_json(cls, value: object) -> DesiredState:
        """Check a snapshot: its frame strictly, each environment on its own.

        A bad frame raises WireError. A bad environment lands in ``refused`` with its
        reason; so do all entries of a name the snapshot gives twice. An empty
        ``environments`` list is only accepted with ``"complete": true``: an empty answer
        the server did not vouch for must never tear the host down.
        """
        data = _obj(value, "body")
        generation = _int(data.get("generation"), "generation")
        complete = data.get("complete") is True
        raw_envs = _list(data.get("environments"), "environments")
        if not raw_envs and not complete:
            raise _fail("environments", "is empty and the state is not marked complete")
        routing = Routing.from_json(data.get("routing"))
        host = _str(data.get("host"), "host")
        parsed: list[DesiredEnvironment] = []
        refused: dict[str, RefusedEnvironment] = {}
        for index, item in enumerate(raw_envs):
            try:
                parsed.append(DesiredEnvironment.from_json(item, f"environments[{index}]"))
            except WireError as exc:
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
        return cls(
            host=host,
            generation=generation,
            complete=complete,
            routing=routing,
            environments=tuple(env for env in parsed if env.name not in refused),
            refused=tuple(refused.values()),
        )

    def to_json(self) -> JsonObject:
        """The body of ``GET /v1/agent/desired-state``. Environments refused for not
        validating cannot be rendered again: only the withheld ones are."""
        return {
            "host": self.host,
            "generation": self.generation,
            "complete": self.complete,
            "routing": self.routing.to_json(),
            "environments": [env.to_json() for env in self.environments],
            "withheld": [
                {"name": item.name, "reason": item.reason} for item in self.refused if item.withheld
            ],
        }


# ---------------------------------------------------------------------------------------
# The agent's report
# ---------------------------------------------------------------------------------------


def _report_fail(where: str, what: str) -> WireError:
    return _fail(where, what, subject="status report")


def _check(value: object, kind: type | tuple[type, ...], where: str, *, optional: bool) -> None:
    """Raise unless ``value`` is a ``kind`` (or None when ``optional``); bools are no ints."""
    if value is None and optional:
        return
    if isinstance(value, bool) and kind is not bool:
        raise _report_fail(where, "has the wrong type")
    if not isinstance(value, kind):
        raise _report_fail(where, "has the wrong type")


@dataclass(frozen=True)
class ContainerReport:
    """One labelled container of an environment, as Docker shows it."""

    id: str
    name: str
    image: str
    status: str
    health: str | None = None
    restart_count: int = 0

    @classmethod
    def from_json(cls, value: object, where: str) -> ContainerReport:
        if not isinstance(value, dict):
            raise _report_fail(where, "must be an object")
        for key in ("id", "name", "image", "status"):
            _check(value.get(key), str, f"{where}.{key}", optional=False)
        _check(value.get("health"), str, f"{where}.health", optional=True)
        _check(value.get("restart_count", 0), int, f"{where}.restart_count", optional=False)
        return cls(
            value["id"],
            value["name"],
            value["image"],
            value["status"],
            value.get("health"),
            value.get("restart_count", 0),
        )

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "name": self.name,
            "image": self.image,
            "status": self.status,
            "health": self.health,
            "restart_count": self.restart_count,
        }


@dataclass(frozen=True)
class EnvironmentUsage:
    """What an environment's running containers use: memory working set and CPU cores
    summed (None after one sample), and their restarts."""

    memory_bytes: int
    cpu_cores: float | None
    restarts: int

    @classmethod
    def from_json(cls, value: object, where: str) -> EnvironmentUsage:
        if not isinstance(value, dict):
            raise _report_fail(where, "must be an object")
        _check(value.get("memory_bytes"), int, f"{where}.memory_bytes", optional=False)
        _check(value.get("cpu_cores"), (int, float), f"{where}.cpu_cores", optional=True)
        _check(value.get("restarts"), int, f"{where}.restarts", optional=False)
        cores = value.get("cpu_cores")
        return cls(
            value["memory_bytes"], None if cores is None else float(cores), value["restarts"]
        )

    def to_json(self) -> JsonObject:
        return {
            "memory_bytes": self.memory_bytes,
            "cpu_cores": self.cpu_cores,
            "restarts": self.restarts,
        }


@dataclass(frozen=True)
class EnvironmentReport:
    """Where one environment stands on the reporting host."""

    name: str
    deployment_id: int | None
    state: ReportState
    healthy: bool = False
    address: str | None = None
    error: str | None = None
    logs: str | None = None
    containers: tuple[ContainerReport, ...] = ()
    usage: EnvironmentUsage | None = None

    @classmethod
    def from_json(cls, value: object, where: str) -> EnvironmentReport:
        if not isinstance(value, dict):
            raise _report_fail(where, "must be an object")
        _check(value.get("name"), str, f"{where}.name", optional=False)
        _check(value.get("deployment_id"), int, f"{where}.deployment_id", optional=True)
        try:
            state = ReportState(str(value.get("state")))
        except ValueError:
            states = ", ".join(state.value for state in ReportState)
            raise _report_fail(f"{where}.state", f"must be one of {states}") from None
        _check(value.get("healthy", False), bool, f"{where}.healthy", optional=False)
        for key in ("address", "error", "logs"):
            _check(value.get(key), str, f"{where}.{key}", optional=True)
        containers = value.get("containers", [])
        if not isinstance(containers, list):
            raise _report_fail(f"{where}.containers", "must be a list")
        usage = value.get("usage")
        return cls(
            name=value["name"],
            deployment_id=value.get("deployment_id"),
            state=state,
            healthy=value.get("healthy", False),
            address=value.get("address"),
            error=value.get("error"),
            logs=value.get("logs"),
            containers=tuple(
                ContainerReport.from_json(item, f"{where}.containers[{index}]")
                for index, item in enumerate(containers)
            ),
            usage=None if usage is None else EnvironmentUsage.from_json(usage, f"{where}.usage"),
        )

    def to_json(self) -> JsonObject:
        data: JsonObject = {
            "name": self.name,
            "deployment_id": self.deployment_id,
            "state": self.state.value,
            "healthy": self.healthy,
            "address": self.address,
            "error": self.error,
            "logs": self.logs,
            "containers": [container.to_json() for container in self.containers],
        }
        if self.usage is not None:
            data["usage"] = self.usage.to_json()
        return data


@dataclass(frozen=True)
class AgentReport:
    """The body of ``POST /v1/agent/status``: the generation the agent applied and where
    each environment stands. ``agent_version`` may be missing (None): the control plane
    has always taken reports without it."""

    generation: int
    agent_version: str | None
    environments: tuple[EnvironmentReport, ...]

    def environment(self, name: str) -> EnvironmentReport | None:
        return next((env for env in self.environments if env.name == name), None)

    @classmethod
    def from_json(cls, value: object) -> AgentReport:
        if not isinstance(value, dict):
            raise _report_fail("body", "must be an object")
        _check(value.get("generation"), int, "generation", optional=False)
        _check(value.get("agent_version"), str, "agent_version", optional=True)
        environments = value.get("environments", [])
        if not isinstance(environments, list):
            raise _report_fail("environments", "must be a list")
        return cls(
            value["generation"],
            value.get("agent_version"),
            tuple(
                EnvironmentReport.from_json(item, f"environments[{index}]")
                for index, item in enumerate(environments)
            ),
        )

    def to_json(self) -> JsonObject:
        return {
            "generation": self.generation,
            "agent_version": self.agent_version,
            "environments": [env.to_json() for env in self.environments],
        }
