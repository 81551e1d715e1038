"""The one compose policy: an allow-list of what an application's compose file may ask for.

A compose file comes from a repository (maybe a fork's) and is run by a host agent next to
production, so anything that reaches the host (binds, devices, namespaces, capabilities,
external volumes and networks, routing labels) is refused, with the key path named. It is
pure (no filesystem): the build worker adds the checks that need the checkout, and the
build worker, the control plane and the agent all call :func:`check_compose`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from contracts.yamlsafe import YamlRefused, load_yaml

ROUTING_LABEL_PREFIXES = ("traefik.", "io.portside.", "com.docker.compose.")
# Service, volume and network names: what compose accepts, minus dots and upper case
# (they become DNS names and parts of the agent's names for containers and volumes).
SERVICE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_LISTED = 100

TOP_LEVEL_KEYS = frozenset({"services", "volumes", "networks", "version"})
SERVICE_KEYS = frozenset(
    {
        "image",
        "build",
        "command",
        "entrypoint",
        "environment",
        "env_file",
        "expose",
        "ports",
        "depends_on",
        "healthcheck",
        "restart",
        "volumes",
        "networks",
        "working_dir",
        "user",
        "tmpfs",
        "init",
        "read_only",
        "stop_signal",
        "stop_grace_period",
        "labels",
        "deploy",
        "cpus",
        "mem_limit",
        "pids_limit",
        "hostname",
        "domainname",
        "extra_hosts",
        "platform",
        "shm_size",
        "pull_policy",
        "extends",
        "tty",
        "stdin_open",
    }
)
BUILD_KEYS = frozenset({"context", "dockerfile", "args", "target"})
HEALTHCHECK_KEYS = frozenset(
    {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
)
PULL_POLICIES = frozenset({"always", "missing", "if_not_present", "never", "build"})
_PORT = re.compile(r"[0-9]{1,5}(?:-[0-9]{1,5})?(?:/(?:tcp|udp|sctp))?")
_VOLUME_MODES = frozenset({"ro", "rw", "nocopy", "z", "Z"})
_INTERPOLATION = re.compile(r"(?<!\$)(?:\$\$)*\$(?!\$)")
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([kmgtp])?i?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


@dataclass(frozen=True)
class Violation:
    """One refused thing: its key path (``services.web.cap_add``) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class ComposeRefused(ValueError):
    """A compose file the policy refuses; the message names every key path."""

    def __init__(self, violations: tuple[Violation, ...]) -> None:
        self.violations = violations
        listed = "; ".join(str(v) for v in violations[:MAX_LISTED])
        more = len(violations) - MAX_LISTED
        super().__init__(
            f"compose file refused: {listed}" + (f" (and {more} more)" if more > 0 else "")
        )


@dataclass(frozen=True)
class Caps:
    """A service's resource caps: the most its compose file may ask for (None: no cap)."""

    cpus: float | None = None
    memory_bytes: int | None = None
    pids: int | None = None


def check_compose(
    document: Mapping[str, Any],
    *,
    extra_allowed: frozenset[str] = frozenset(),
    caps: Caps | None = None,
) -> tuple[Violation, ...]:
    """Every violation of the policy in a parsed compose file; empty when it may run.

    ``extra_allowed`` names service keys an admin allowed for this service's production
    builds: they are then neither refused nor inspected, in every service of the file.
    """
    checker = _Checker(extra_allowed, caps or Caps())
    checker.document(document)
    return tuple(checker.violations)


def load_and_check(
    text: str, *, extra_allowed: frozenset[str] = frozenset(), caps: Caps | None = None
) -> dict[str, Any]:
    """Parse ``text`` (with :func:`load_yaml`'s limits) and check it; ComposeRefused if not."""
    try:
        document = load_yaml(text)
    except YamlRefused as exc:
        raise ComposeRefused((Violation("(file)", str(exc)),)) from None
    violations = check_compose(document, extra_allowed=extra_allowed, caps=caps)
    if violations:
        raise ComposeRefused(violations)
    assert isinstance(document, dict)
    return document


def parse_memory(value: Any) -> int | None:
    """Bytes in a docker memory size (``512m``, ``1.5GiB``, ``1073741824``); None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    match = _MEMORY.fullmatch(str(value).strip())
    if match is None:
        return None
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def has_interpolation(value: str) -> bool:
    """Whether compose would substitute a variable in ``value`` (``$$`` is a literal ``$``)."""
    return bool(_INTERPOLATION.search(value))


def is_routing_label(key: str) -> bool:
    """A label only the agent may set: Traefik's, Portside's or compose's own."""
    return key.strip().lower().startswith(ROUTING_LABEL_PREFIXES)


class _Checker:
    """Walks one document and collects violations (never raises on a malformed file)."""

    def __init__(self, extra_allowed: frozenset[str], caps: Caps) -> None:
        self.extra_allowed = extra_allowed
        self.caps = caps
        self.violations: list[Violation] = []
        self.volume_names: set[str] = set()
        self.network_names: set[str] = set()
        self.service_names: set[str] = set()

    def refuse(self, path: str, reason: str) -> None:
        self.violations.append(Violation(path, reason))

    def document(self, document: Any) -> None:
        if not isinstance(document, Mapping):
            self.refuse("(file)", "a compose file must be a mapping with a services: key")
            return
        for key in document:
            if not isinstance(key, str) or not (key in TOP_LEVEL_KEYS or key.startswith("x-")):
                self.refuse(_join("", key), _not_allowed(key, "at the top level"))
        if "version" in document and not isinstance(document["version"], str | int | float):
            self.refuse("version", "must be a string")
        self.volume_names = self.declared(document.get("volumes"), "volumes", {"labels"})
        self.network_names = self.declared(
            document.get("networks"), "networks", {"labels", "internal"}
        )
        services = document.get("services")
        if not isinstance(services, Mapping) or not services:
            self.refuse("services", "a compose file needs a mapping of one or more services")
            return
        self.service_names = {name for name in services if isinstance(name, str)}
        for name, service in services.items():
            path = _join("services", name)
            if not self.name(path, name, "service"):
                continue
            if not isinstance(service, Mapping):
                self.refuse(path, "a service must be a mapping")
                continue
            self.service(path, service)

    def name(self, path: str, name: Any, what: str) -> bool:
        if isinstance(name, str) and SERVICE_NAME_RE.fullmatch(name):
            return True
        self.refuse(path, f"{what} names must match {SERVICE_NAME_RE.pattern}")
        return False

    def declared(self, section: Any, where: str, allowed: set[str]) -> set[str]:
        """The names of top-level volumes or networks; anything beyond ``allowed`` refused."""
        if section is None:
            return set()
        if not isinstance(section, Mapping):
            self.refuse(where, "must be a mapping of names")
            return set()
        names = set()
        for name, spec in section.items():
            path = _join(where, name)
            if not self.name(path, name, where.rstrip("s")):
                continue
            names.add(name)
            if spec is None:
                continue
            if not isinstance(spec, Mapping):
                self.refuse(path, "must be a mapping")
                continue
            for key, value in spec.items():
                key_path = _join(path, key)
                if key not in allowed and not _extension(key):
                    self.refuse(
                        key_path, _not_allowed(key, "here: the agent names, places and drives it")
                    )
                elif key == "labels":
                    self.labels(key_path, value)
                elif key == "internal" and not isinstance(value, bool):
                    self.refuse(key_path, "must be true or false")
        return names

    def service(self, path: str, service: Mapping[Any, Any]) -> None:
        for key, value in service.items():
            key_path = _join(path, key)
            if not isinstance(key, str):
                self.refuse(key_path, "keys must be strings")
            elif key in self.extra_allowed or _extension(key):
                continue
            elif key not in SERVICE_KEYS:
                self.refuse(key_path, _not_allowed(key, "for this service"))
            else:
                check = self.CHECKS.get(key)
                if check is not None:
                    check(self, key_path, value)

    # Per-key checks: each gets the key's path and its value.

    def string(self, path: str, value: Any) -> None:
        if not isinstance(value, str):
            self.refuse(path, "must be a string")

    def scalar(self, path: str, value: Any) -> None:
        if not isinstance(value, str | int | float):
            self.refuse(path, "must be a string or a number")

    def boolean(self, path: str, value: Any) -> None:
        if not isinstance(value, bool):
            self.refuse(path, "must be true or false")

    def command(self, path: str, value: Any) -> None:
        if value is None or isinstance(value, str):
            return
        if not isinstance(value, list) or not all(_is_scalar(v) for v in value):
            self.refuse(path, "must be a string or a list of strings")

    def string_list(self, path: str, value: Any) -> None:
        if isinstance(value, str):
            return
        if not isinstance(value, list) or not all(_is_scalar(v) for v in value):
            self.refuse(path, "must be a string or a list of strings")

    def key_values(self, path: str, value: Any) -> None:
        """``environment``, ``extra_hosts``, build ``args``: a mapping or a list of strings."""
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str) or not (item is None or _is_scalar(item)):
                    self.refuse(_join(path, key), "must be a string key with a scalar value")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if not _is_scalar(item):
                    self.refuse(f"{path}[{index}]", "must be a string")
        elif value is not None:
            self.refuse(path, "must be a mapping or a list")

    def image(self, path: str, value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            self.refuse(path, "must be an image reference")

    def build(self, path: str, value: Any) -> None:
        if isinstance(value, str):
            self.relative(path, value, "build context")
            return
        if not isinstance(value, Mapping):
            self.refuse(path, "must be a path or a mapping")
            return
        for key, item in value.items():
            key_path = _join(path, key)
            if key not in BUILD_KEYS and not _extension(key):
                self.refuse(key_path, _not_allowed(key, "in a build"))
            elif key == "args":
                self.key_values(key_path, item)
            elif key == "target":
                self.string(key_path, item)
        context = value.get("context", ".")
        if self.relative(_join(path, "context"), context, "build context"):
            # The Dockerfile may sit outside its context (docker allows it), not outside
            # the repository.
            dockerfile = value.get("dockerfile", "Dockerfile")
            if not isinstance(dockerfile, str) or posixpath.isabs(dockerfile):
                self.refuse(_join(path, "dockerfile"), "the dockerfile must be a relative path")
            else:
                self.relative(
                    _join(path, "dockerfile"), posixpath.join(context, dockerfile), "dockerfile"
                )

    def relative(self, path: str, value: Any, what: str) -> bool:
        """A relative path that does not climb out of the compose file's directory."""
        if not isinstance(value, str) or not value:
            self.refuse(path, f"the {what} must be a relative path")
            return False
        reason = _path_problem(value)
        if reason:
            self.refuse(path, f"the {what} {reason}")
            return False
        return True

    def env_file(self, path: str, value: Any) -> None:
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            item_path = f"{path}[{index}]" if isinstance(value, list) else path
            if isinstance(item, Mapping):
                for key in item:
                    if key not in ("path", "required", "format"):
                        self.refuse(_join(item_path, key), _not_allowed(key, "in an env_file"))
                self.relative(_join(item_path, "path"), item.get("path"), "env_file")
            else:
                self.relative(item_path, item, "env_file")

    def expose(self, path: str, value: Any) -> None:
        if not isinstance(value, list):
            self.refuse(path, "must be a list of container ports")
            return
        for index, item in enumerate(value):
            if not _container_port(item):
                self.refuse(f"{path}[{index}]", "must be a container port such as 80 or 8080/tcp")

    def ports(self, path: str, value: Any) -> None:
        if not isinstance(value, list):
            self.refuse(path, "must be a list of container ports")
            return
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            if isinstance(item, Mapping):
                for key in item:
                    if key not in ("target", "protocol"):
                        self.refuse(
                            _join(item_path, key),
                            "only target and protocol: no host address or published port",
                        )
                if not _container_port(item.get("target")):
                    self.refuse(_join(item_path, "target"), "must be a container port")
                if item.get("protocol", "tcp") not in ("tcp", "udp", "sctp"):
                    self.refuse(_join(item_path, "protocol"), "must be tcp, udp or sctp")
            elif not _container_port(item):
                self.refuse(item_path, "only a container port: no host address or published port")

    def depends_on(self, path: str, value: Any) -> None:
        if isinstance(value, list):
            names: list[Any] = value
        elif isinstance(value, Mapping):
            names = list(value)
            for name, spec in value.items():
                if spec is not None and not isinstance(spec, Mapping):
                    self.refuse(_join(path, name), "must be a mapping")
        else:
            self.refuse(path, "must be a list or a mapping of services")
            return
        for name in names:
            if name not in self.service_names:
                self.refuse(_join(path, name), "no such service in this file")

    def healthcheck(self, path: str, value: Any) -> None:
        if not isinstance(value, Mapping):
            self.refuse(path, "must be a mapping")
            return
        for key in value:
            if key not in HEALTHCHECK_KEYS:
                self.refuse(_join(path, key), _not_allowed(key, "in a healthcheck"))
        if "test" in value:
            self.command(_join(path, "test"), value["test"])

    def volumes(self, path: str, value: Any) -> None:
        if not isinstance(value, list):
            self.refuse(path, "must be a list of volumes")
            return
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            if isinstance(item, Mapping):
                self.long_volume(item_path, item)
            elif isinstance(item, str):
                self.short_volume(item_path, item)
            else:
                self.refuse(item_path, "must be a string or a mapping")

    def short_volume(self, path: str, value: str) -> None:
        if has_interpolation(value):
            self.refuse(path, "variables are not allowed here (they would be read on the host)")
            return
        parts = value.split(":")
        if len(parts) == 1:
            if not value.startswith("/"):
                self.refuse(path, "an anonymous volume needs an absolute container path")
            return
        source, target = parts[0], parts[1]
        if len(parts) > 3 or not target.startswith("/"):
            self.refuse(path, "must be volume:/container/path[:ro]")
        elif source not in self.volume_names:
            self.refuse(path, f"{source!r} is not a volume declared in this file: no bind mounts")
        elif len(parts) == 3 and not set(parts[2].split(",")) <= _VOLUME_MODES:
            self.refuse(path, f"mode {parts[2]!r} is not allowed")

    def long_volume(self, path: str, value: Mapping[Any, Any]) -> None:
        kind = value.get("type", "volume")
        allowed = {"type", "target", "read_only"}
        if kind == "volume":
            allowed |= {"source", "volume"}
            source = value.get("source")
            if source is not None and source not in self.volume_names:
                self.refuse(
                    _join(path, "source"), "must be a volume declared in this file: no bind mounts"
                )
            options = value.get("volume")
            if options is not None and (
                not isinstance(options, Mapping) or set(options) - {"nocopy"}
            ):
                self.refuse(_join(path, "volume"), "only nocopy is allowed")
        elif kind == "tmpfs":
            allowed |= {"tmpfs"}
            options = value.get("tmpfs")
            if options is not None and (
                not isinstance(options, Mapping) or set(options) - {"size", "mode"}
            ):
                self.refuse(_join(path, "tmpfs"), "only size and mode are allowed")
        else:
            self.refuse(_join(path, "type"), f"{kind!r} mounts are not allowed: volume or tmpfs")
            return
        for key in value:
            if key not in allowed:
                self.refuse(_join(path, key), _not_allowed(key, f"in a {kind} mount"))
        target = value.get("target")
        if not isinstance(target, str) or not target.startswith("/") or has_interpolation(target):
            self.refuse(_join(path, "target"), "must be an absolute container path")

    def service_networks(self, path: str, value: Any) -> None:
        if isinstance(value, list):
            names: list[Any] = value
        elif isinstance(value, Mapping):
            names = list(value)
            for name, spec in value.items():
                if spec is None:
                    continue
                if not isinstance(spec, Mapping):
                    self.refuse(_join(path, name), "must be a mapping")
                    continue
                for key, item in spec.items():
                    if key not in ("aliases", "priority"):
                        self.refuse(_join(_join(path, name), key), _not_allowed(key, "here"))
                    elif key == "aliases":
                        self.names(_join(_join(path, name), key), item)
        else:
            self.refuse(path, "must be a list or a mapping of networks")
            return
        for name in names:
            if name != "default" and name not in self.network_names:
                self.refuse(_join(path, name), "not a network declared in this file")

    def names(self, path: str, value: Any) -> None:
        if not isinstance(value, list):
            self.refuse(path, "must be a list of names")
            return
        for index, item in enumerate(value):
            self.name(f"{path}[{index}]", item, "alias")

    def tmpfs(self, path: str, value: Any) -> None:
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            item_path = f"{path}[{index}]" if isinstance(value, list) else path
            if not isinstance(item, str) or not item.startswith("/") or has_interpolation(item):
                self.refuse(item_path, "must be an absolute container path")

    def labels(self, path: str, value: Any) -> None:
        if isinstance(value, Mapping):
            keys = [(k, _join(path, k)) for k in value]
            self.key_values(path, value)
        elif isinstance(value, list):
            keys = [(str(item).partition("=")[0], f"{path}[{i}]") for i, item in enumerate(value)]
            self.key_values(path, value)
        else:
            self.refuse(path, "must be a mapping or a list")
            return
        for key, key_path in keys:
            if not isinstance(key, str) or is_routing_label(key):
                self.refuse(key_path, "routing and compose labels are set by the agent only")
            elif has_interpolation(key):
                self.refuse(key_path, "variables are not allowed in label names")

    def restart(self, path: str, value: Any) -> None:
        policy = str(value).partition(":")[0] if isinstance(value, str) else None
        if policy not in ("no", "always", "on-failure", "unless-stopped"):
            self.refuse(path, "must be no, always, on-failure[:N] or unless-stopped")

    def pull_policy(self, path: str, value: Any) -> None:
        if value not in PULL_POLICIES:
            self.refuse(path, f"must be one of {', '.join(sorted(PULL_POLICIES))}")

    def extends(self, path: str, value: Any) -> None:
        if isinstance(value, str):
            name: Any = value
        elif isinstance(value, Mapping):
            for key in value:
                if key != "service":
                    self.refuse(_join(path, key), "extends may only name a service of this file")
            name = value.get("service")
        else:
            self.refuse(path, "must be a service name")
            return
        if name not in self.service_names:
            self.refuse(path, "must name a service of this file")

    def deploy(self, path: str, value: Any) -> None:
        if not isinstance(value, Mapping):
            self.refuse(path, "must be a mapping")
            return
        for key, item in value.items():
            key_path = _join(path, key)
            if key != "resources":
                self.refuse(key_path, _not_allowed(key, "in deploy: only resources.limits"))
            elif not isinstance(item, Mapping):
                self.refuse(key_path, "must be a mapping")
            else:
                for sub, limits in item.items():
                    sub_path = _join(key_path, sub)
                    if sub != "limits":
                        self.refuse(sub_path, _not_allowed(sub, "in resources: only limits"))
                    elif not isinstance(limits, Mapping):
                        self.refuse(sub_path, "must be a mapping")
                    else:
                        self.limits(sub_path, limits)

    def limits(self, path: str, limits: Mapping[Any, Any]) -> None:
        for key, item in limits.items():
            key_path = _join(path, key)
            if key == "cpus":
                self.cpus(key_path, item)
            elif key == "memory":
                self.memory(key_path, item)
            elif key == "pids":
                self.pids(key_path, item)
            else:
                self.refuse(key_path, _not_allowed(key, "in limits"))

    def cpus(self, path: str, value: Any) -> None:
        try:
            cpus = float(value)
        except (TypeError, ValueError):
            self.refuse(path, "must be a number of CPUs")
            return
        if isinstance(value, bool) or not cpus > 0:
            self.refuse(path, "must be a positive number of CPUs")
        elif self.caps.cpus is not None and cpus > self.caps.cpus:
            self.refuse(path, f"more than this service's cap of {self.caps.cpus} CPUs")

    def memory(self, path: str, value: Any) -> None:
        size = parse_memory(value)
        if size is None or size <= 0:
            self.refuse(path, "must be a memory size such as 512m")
        elif self.caps.memory_bytes is not None and size > self.caps.memory_bytes:
            self.refuse(path, f"more than this service's cap of {self.caps.memory_bytes} bytes")

    def pids(self, path: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.refuse(path, "must be a number of processes")
        elif self.caps.pids is not None and not 0 < value <= self.caps.pids:
            self.refuse(path, f"must be between 1 and this service's cap of {self.caps.pids}")

    def shm_size(self, path: str, value: Any) -> None:
        if parse_memory(value) is None:
            self.refuse(path, "must be a memory size such as 64m")

    CHECKS: Mapping[str, Callable[[_Checker, str, Any], None]] = {
        "image": image,
        "build": build,
        "command": command,
        "entrypoint": command,
        "environment": key_values,
        "env_file": env_file,
        "expose": expose,
        "ports": ports,
        "depends_on": depends_on,
        "healthcheck": healthcheck,
        "restart": restart,
        "volumes": volumes,
        "networks": service_networks,
        "working_dir": string,
        "user": scalar,
        "tmpfs": tmpfs,
        "init": boolean,
        "read_only": boolean,
        "tty": boolean,
        "stdin_open": boolean,
        "stop_signal": string,
        "stop_grace_period": scalar,
        "labels": labels,
        "deploy": deploy,
        "cpus": cpus,
        "mem_limit": memory,
        "pids_limit": pids,
        "hostname": string,
        "domainname": string,
        "extra_hosts": key_values,
        "platform": string,
        "shm_size": shm_size,
        "pull_policy": pull_policy,
        "extends": extends,
    }


def _join(path: str, key: Any) -> str:
    text = key if isinstance(key, str) else repr(key)
    return f"{path}.{text}" if path else text


def _extension(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("x-")


def _not_allowed(key: Any, where: str) -> str:
    return f"{key!r} is not allowed {where}" if not isinstance(key, str) else f"not allowed {where}"


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _container_port(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 < value < 65536
    return isinstance(value, str) and bool(_PORT.fullmatch(value))


def _path_problem(value: str) -> str | None:
    """Why ``value`` is not a relative path inside the compose file's directory, or None."""
    if "://" in value or value.startswith(("git@", "github.com/")) or value.endswith(".git"):
        return "must be a path in the repository, not a URL"
    if has_interpolation(value) or value.startswith("~") or "\\" in value:
        return "must be a plain relative path (no variables, ~ or backslashes)"
    if posixpath.isabs(value):
        return "must be a relative path"
    normal = posixpath.normpath(value)
    if normal == ".." or normal.startswith("../"):
        return "must stay inside the repository"
    return None
