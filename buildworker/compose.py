"""Find and check a repository's compose file, list what to build, pin built images.

A compose file in a pushed repository is untrusted input that host agents will run, so it
is refused (unless the service allows it) when it asks for powers over the host:
privileged mode, host namespaces, SYS_ADMIN, devices, bind mounts outside the project.
Paths are checked after resolving symlinks, against the checked-out workspace.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from buildworker.errors import PermanentBuildError

# docker compose's own lookup order.
DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
MAX_SIZE = 1024 * 1024
_HOST_NAMESPACES = ("network_mode", "pid", "ipc", "uts", "userns_mode")
_DANGEROUS_CAPS = {"SYS_ADMIN", "ALL"}


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML 1.2's booleans and integers, as docker compose reads them.

    PyYAML's 1.1 rules would turn ``22:22`` into 1342 and ``on`` into True, and
    ``pin_images`` would then write those back changed.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if not tag.endswith((":bool", ":int", ":float"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in (
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+", "-+0123456789"),
    ("float", r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", "-+0123456789."),
):
    _Loader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), list(_first)
    )


@dataclass(frozen=True)
class BuildSpec:
    """One image to build: ``service`` is None for a repository's root Dockerfile."""

    service: str | None
    context: Path
    dockerfile: str
    args: dict[str, str] = field(default_factory=dict)
    target: str | None = None


@dataclass(frozen=True)
class ComposeProject:
    """A checked compose file: its path and text, every service, and those to build."""

    path: Path
    text: str
    services: tuple[str, ...]
    builds: tuple[BuildSpec, ...]


@dataclass(frozen=True)
class BuildPlan:
    """What a commit builds: the compose project's services, or the root Dockerfile."""

    builds: tuple[BuildSpec, ...]
    compose: ComposeProject | None = None


def plan_builds(
    workspace: Path, compose_path: str | None = None, *, allow_privileged: bool = False
) -> BuildPlan:
    """The builds of a checked-out commit: its compose file's, else ``./Dockerfile``."""
    project = load_compose(workspace, compose_path, allow_privileged=allow_privileged)
    if project is not None:
        if not project.builds:
            raise PermanentBuildError(f"{_rel(project.path, workspace)} has no build: section")
        return BuildPlan(project.builds, project)
    if (workspace / "Dockerfile").is_file():
        return BuildPlan((BuildSpec(None, workspace.resolve(), "Dockerfile"),))
    raise PermanentBuildError("the repository has neither a Dockerfile nor a compose file")


def find_compose_file(workspace: Path, compose_path: str | None = None) -> Path | None:
    """The compose file: ``compose_path`` (must exist) or the first default name, or None."""
    if compose_path:
        path = inside(workspace, workspace, compose_path, "compose file", allow_parent=False)
        if not path.is_file():
            raise PermanentBuildError(f"compose file {compose_path!r} not found")
        return path
    for name in DEFAULT_FILES:
        candidate = workspace / name
        if candidate.is_file():
            return inside(workspace, workspace, name, "compose file")
    return None


def load_compose(
    workspace: Path, compose_path: str | None = None, *, allow_privileged: bool = False
) -> ComposeProject | None:
    """Find, read and check the compose file; None when the repository has none."""
    path = find_compose_file(workspace, compose_path)
    if path is None:
        return None
    if path.stat().st_size > MAX_SIZE:
        raise PermanentBuildError(f"compose file is larger than {MAX_SIZE} bytes")
    text = path.read_text(encoding="utf-8", errors="replace")
    return parse_compose(text, path, workspace, allow_privileged=allow_privileged)


def parse_compose(
    text: str, path: Path, workspace: Path, *, allow_privileged: bool = False
) -> ComposeProject:
    """Check ``text`` (the file at ``path`` in ``workspace``) and list its builds."""
    document = _load(text)
    services = _services(document)
    project_dir = path.parent.resolve()
    if not allow_privileged:
        _refuse_host_files(document, project_dir)
    builds = []
    for name, service in services.items():
        if not allow_privileged:
            _refuse_privileges(name, service, project_dir)
        extends = service.get("extends")
        if isinstance(extends, Mapping) and "file" in extends:
            raise PermanentBuildError(f"service {name}: extends from another file")
        if service.get("build") is not None:
            builds.append(_build_spec(name, service["build"], project_dir, workspace))
    return ComposeProject(path, text, tuple(services), tuple(builds))


def pin_images(compose_text: str, images: Mapping[str, str]) -> str:
    """The compose file with each service in ``images`` running that digest reference.

    Its ``build:`` goes, so hosts pull the exact image that was pushed and never build.
    Comments are not kept (the file is regenerated) and merge keys (``<<``) come out resolved.
    """
    document = _load(compose_text)
    services = _services(document)
    for name, reference in images.items():
        if name not in services:
            raise ValueError(f"no service {name!r} in the compose file")
        if "@sha256:" not in reference:
            raise ValueError(f"not a digest reference: {reference!r}")
        service = services[name] = copy.deepcopy(services[name])  # may be shared by an alias
        service.pop("build", None)
        if service.get("pull_policy") == "build":
            service.pop("pull_policy")
        service["image"] = reference
    dumped: str = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    return dumped


def inside(
    workspace: Path, base: Path, relative: str, what: str, *, allow_parent: bool = True
) -> Path:
    """``base / relative`` resolved, refused unless it stays inside ``workspace``."""
    if not relative or PurePosixPath(relative).is_absolute() or "\\" in relative:
        raise PermanentBuildError(f"{what} must be a relative path, got {relative!r}")
    if not allow_parent and ".." in PurePosixPath(relative).parts:
        raise PermanentBuildError(f"{what} must not contain '..': {relative!r}")
    resolved = (base / relative).resolve()
    if not resolved.is_relative_to(workspace.resolve()):
        raise PermanentBuildError(f"{what} {relative!r} points outside the repository")
    return resolved


def _load(text: str) -> dict[str, Any]:
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PermanentBuildError(f"compose file is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise PermanentBuildError("compose file must be a mapping with a services: key")
    if "include" in document:
        raise PermanentBuildError("compose include: is not supported")
    return document


def _services(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = document.get("services")
    if not isinstance(services, dict) or not services:
        raise PermanentBuildError("compose file has no services")
    for name, service in services.items():
        if not isinstance(service, dict):
            raise PermanentBuildError(f"service {name!r} must be a mapping")
    return services


def _build_spec(name: str, build: Any, project_dir: Path, workspace: Path) -> BuildSpec:
    if isinstance(build, str):
        build = {"context": build}
    if not isinstance(build, dict):
        raise PermanentBuildError(f"service {name}: build must be a path or a mapping")
    if "dockerfile_inline" in build:
        raise PermanentBuildError(f"service {name}: dockerfile_inline is not supported")
    context_value = str(build.get("context", "."))
    if "://" in context_value or context_value.startswith("git@"):
        raise PermanentBuildError(f"service {name}: remote build contexts are not supported")
    context = inside(workspace, project_dir, context_value, f"service {name}: build context")
    if not context.is_dir():
        raise PermanentBuildError(f"service {name}: build context {context_value!r} not found")
    dockerfile = str(build.get("dockerfile", "Dockerfile"))
    # The Dockerfile may sit outside its context (docker allows it), not outside the repo:
    # docker-py would read it from the worker's disk.
    dockerfile_path = inside(workspace, context, dockerfile, f"service {name}: dockerfile")
    if not dockerfile_path.is_file():
        raise PermanentBuildError(f"service {name}: dockerfile {dockerfile!r} not found")
    target = build.get("target")
    return BuildSpec(
        name,
        context,
        dockerfile,
        _build_args(name, build.get("args")),
        str(target) if target is not None else None,
    )


def _build_args(name: str, args: Any) -> dict[str, str]:
    """``args`` as a mapping or ``KEY=value`` list; keys without a value are left out."""
    if args is None:
        return {}
    if isinstance(args, list):
        pairs = [str(item).partition("=") for item in args]
        return {key: value for key, sep, value in pairs if sep}
    if isinstance(args, dict):
        return {str(k): _scalar(v) for k, v in args.items() if v is not None}
    raise PermanentBuildError(f"service {name}: build args must be a mapping or a list")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _refuse_privileges(name: str, service: dict[str, Any], project_dir: Path) -> None:
    def refuse(what: str) -> None:
        raise PermanentBuildError(f"service {name}: {what} is not allowed for this service")

    for key in ("privileged", *_HOST_NAMESPACES, "cap_add", "devices", "security_opt"):
        if "$" in str(service.get(key, "")):
            refuse(f"a variable in {key}")  # interpolated on the host: cannot be checked here
    if str(service.get("privileged", "")).lower() in ("true", "yes", "on", "1"):
        refuse("privileged: true")
    for key in _HOST_NAMESPACES:
        if str(service.get(key, "")).lower() == "host":
            refuse(f"{key}: host")
    caps = {str(cap).upper().removeprefix("CAP_") for cap in _list(service.get("cap_add"))}
    if caps & _DANGEROUS_CAPS:
        refuse(f"cap_add: {', '.join(sorted(caps & _DANGEROUS_CAPS))}")
    if service.get("devices"):
        refuse("devices")
    for option in _list(service.get("security_opt")):
        if "unconfined" in str(option) or "disable" in str(option):
            refuse(f"security_opt: {option}")
    for volume in _list(service.get("volumes")):
        source = _bind_source(volume)
        if source is not None and not _within(project_dir, source):
            refuse(f"bind mount of {source!r} outside the project directory")
    for env_file in _list(service.get("env_file")):
        path = env_file.get("path") if isinstance(env_file, dict) else env_file
        if not _within(project_dir, str(path)):
            refuse(f"env_file {path!r} outside the project directory")


def _refuse_host_files(document: dict[str, Any], project_dir: Path) -> None:
    """Top-level configs/secrets files and bind-backed volumes also read the host's disk."""
    for section in ("configs", "secrets"):
        for name, item in (document.get(section) or {}).items():
            if isinstance(item, dict) and "file" in item and not _within(project_dir, item["file"]):
                raise PermanentBuildError(f"{section} {name}: file outside the project directory")
    for name, volume in (document.get("volumes") or {}).items():
        device = ((volume or {}).get("driver_opts") or {}).get("device")
        if device is not None and not _within(project_dir, str(device)):
            raise PermanentBuildError(f"volume {name}: device outside the project directory")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value else []


def _bind_source(volume: Any) -> str | None:
    """The host path of a bind mount (short or long syntax); None for volumes and tmpfs."""
    if isinstance(volume, dict):
        return str(volume.get("source", "")) if volume.get("type") == "bind" else None
    source, sep, _rest = str(volume).partition(":")
    if not sep:
        return None  # an anonymous volume: just a container path
    return source if source.startswith((".", "/", "~", "$")) or not source else None


def _within(project_dir: Path, source: str) -> bool:
    """A relative path that stays in the project directory, symlinks resolved.

    Absolute paths are refused even when they point into this worker's checkout: the
    compose file runs on a host whose project directory is somewhere else.
    """
    if not source or source.startswith(("~", "$", "/")) or "$" in source:
        return False
    return (project_dir / source).resolve().is_relative_to(project_dir)


def _rel(path: Path, workspace: Path) -> str:
    return str(path.relative_to(workspace.resolve()))
