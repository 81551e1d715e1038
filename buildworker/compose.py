"""Find and check a repository's compose file, list what to build, pin built images.

A compose file in a pushed repository is untrusted input that host agents will run: it
must pass the one compose policy (:mod:`contracts.compose_policy`, an allow-list) before
anything is built, so the build log says early which key paths are refused. What the
policy cannot see without the checkout is checked here: the compose file, build contexts,
Dockerfiles and env files must resolve (symlinks followed) inside the repository.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from buildworker.errors import PermanentBuildError
from contracts.compose_policy import ComposeRefused, load_and_check
from contracts.compose_routes import RouteChoiceError, routed_service
from contracts.yamlsafe import MAX_BYTES, YamlRefused, dump_yaml, load_yaml

# docker compose's own lookup order.
DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


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
    """A checked compose file: its path and text, every service, those to build, and the
    one that gets the environment's domain (:func:`contracts.compose_routes.routed_service`)."""

    path: Path
    text: str
    services: tuple[str, ...]
    builds: tuple[BuildSpec, ...]
    routed_service: str | None = None


@dataclass(frozen=True)
class BuildPlan:
    """What a commit builds: the compose project's services, or the root Dockerfile."""

    builds: tuple[BuildSpec, ...]
    compose: ComposeProject | None = None


def plan_builds(
    workspace: Path,
    compose_path: str | None = None,
    *,
    extra_allowed: frozenset[str] = frozenset(),
) -> BuildPlan:
    """The builds of a checked-out commit: its compose file's, else ``./Dockerfile``.

    ``extra_allowed`` names the compose keys an admin allowed beyond the policy for this
    service's production builds (always empty for a fork's).
    """
    project = load_compose(workspace, compose_path, extra_allowed=extra_allowed)
    if project is not None:
        if not project.builds:
            raise PermanentBuildError(f"{_rel(project.path, workspace)} has no build: section")
        return BuildPlan(project.builds, project)
    if (workspace / "Dockerfile").is_file():
        return BuildPlan((BuildSpec(None, workspace.resolve(), "Dockerfile"),))
    raise PermanentBuildError("the repository has neither a Dockerfile nor a compose file")


def find_compose_file(workspace: Path, compose_path: str | None = None) -> Path | None:
    """The compose file: ``compose_path`` (must exist) or the first default name, or None.

    The path is resolved: a compose file that is a symlink out of the repository is refused.
    """
    if compose_path:
        path = inside(workspace, workspace, compose_path, "compose file", allow_parent=False)
        if not path.is_file():
            raise PermanentBuildError(f"compose file {compose_path!r} not found")
        return path
    for name in DEFAULT_FILES:
        candidate = workspace / name
        if candidate.is_file() or candidate.is_symlink():
            return inside(workspace, workspace, name, "compose file")
    return None


def load_compose(
    workspace: Path,
    compose_path: str | None = None,
    *,
    extra_allowed: frozenset[str] = frozenset(),
) -> ComposeProject | None:
    """Find, read and check the compose file; None when the repository has none."""
    path = find_compose_file(workspace, compose_path)
    if path is None:
        return None
    if not path.is_file():
        raise PermanentBuildError(f"compose file {_rel(path, workspace)} is not a file")
    if path.stat().st_size > MAX_BYTES:
        raise PermanentBuildError(f"compose file is larger than {MAX_BYTES} bytes")
    text = path.read_text(encoding="utf-8", errors="replace")
    return parse_compose(text, path, workspace, extra_allowed=extra_allowed)


def parse_compose(
    text: str, path: Path, workspace: Path, *, extra_allowed: frozenset[str] = frozenset()
) -> ComposeProject:
    """Check ``text`` (the file at ``path`` in ``workspace``) and list its builds."""
    try:
        document = load_and_check(text, extra_allowed=extra_allowed)
    except ComposeRefused as exc:
        raise PermanentBuildError(str(exc)) from None
    try:
        routed = routed_service(document)
    except RouteChoiceError as exc:
        raise PermanentBuildError(str(exc)) from None
    project_dir = path.parent.resolve()
    builds = []
    for name, service in document["services"].items():
        for index, env_file in enumerate(_env_files(service.get("env_file"))):
            inside(workspace, project_dir, env_file, f"services.{name}.env_file[{index}]")
        if service.get("build") is not None:
            builds.append(_build_spec(name, service["build"], project_dir, workspace))
    return ComposeProject(path, text, tuple(document["services"]), tuple(builds), routed)


def pin_images(compose_text: str, images: Mapping[str, str]) -> str:
    """The compose file with each service in ``images`` running that digest reference.

    Its ``build:`` goes, so hosts pull the exact image that was pushed and never build.
    Comments are not kept (the file is regenerated) and merge keys (``<<``) come out resolved.
    """
    try:
        document = load_yaml(compose_text)
    except YamlRefused as exc:
        raise PermanentBuildError(f"compose file: {exc}") from None
    services = document.get("services") if isinstance(document, dict) else None
    if not isinstance(services, dict):
        raise PermanentBuildError("compose file has no services")
    for name, reference in images.items():
        if not isinstance(services.get(name), dict):
            raise ValueError(f"no service {name!r} in the compose file")
        if "@sha256:" not in reference:
            raise ValueError(f"not a digest reference: {reference!r}")
        service = services[name] = copy.deepcopy(services[name])  # may be shared by an alias
        service.pop("build", None)
        if service.get("pull_policy") == "build":
            service.pop("pull_policy")
        service["image"] = reference
    return dump_yaml(document)


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


def _build_spec(name: str, build: Any, project_dir: Path, workspace: Path) -> BuildSpec:
    """The build of service ``name``; the policy checked its shape unless an admin allowed
    ``build`` outright, so the shape is checked again where the worker depends on it."""
    where = f"services.{name}.build"
    if isinstance(build, str):
        build = {"context": build}
    if not isinstance(build, dict):
        raise PermanentBuildError(f"{where}: must be a path or a mapping")
    if "dockerfile_inline" in build:
        raise PermanentBuildError(f"{where}.dockerfile_inline: not supported")
    context_value = str(build.get("context", "."))
    if "://" in context_value or context_value.startswith("git@"):
        raise PermanentBuildError(f"{where}.context: remote build contexts are not supported")
    context = inside(workspace, project_dir, context_value, f"{where}.context")
    if not context.is_dir():
        raise PermanentBuildError(f"{where}.context: {context_value!r} not found")
    dockerfile = str(build.get("dockerfile", "Dockerfile"))
    # The Dockerfile may sit outside its context (docker allows it), not outside the repo:
    # docker-py would read it from the worker's disk.
    dockerfile_path = inside(workspace, context, dockerfile, f"{where}.dockerfile")
    if not dockerfile_path.is_file():
        raise PermanentBuildError(f"{where}.dockerfile: {dockerfile!r} not found")
    target = build.get("target")
    return BuildSpec(
        name,
        context,
        dockerfile,
        _build_args(where, build.get("args")),
        str(target) if target is not None else None,
    )


def _env_files(value: Any) -> list[str]:
    """The paths of a service's ``env_file`` (a path, or a list of paths or mappings)."""
    items = value if isinstance(value, list) else [value] if value is not None else []
    paths = [item.get("path") if isinstance(item, dict) else item for item in items]
    return [str(path) if path is not None else "" for path in paths]


def _build_args(where: str, args: Any) -> dict[str, str]:
    """``args`` as a mapping or ``KEY=value`` list; keys without a value are left out."""
    if args is None:
        return {}
    if isinstance(args, list):
        pairs = [str(item).partition("=") for item in args]
        return {key: value for key, sep, value in pairs if sep}
    if isinstance(args, dict):
        return {str(k): _scalar(v) for k, v in args.items() if v is not None}
    raise PermanentBuildError(f"{where}.args: must be a mapping or a list")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _rel(path: Path, workspace: Path) -> str:
    return str(path.relative_to(workspace.resolve()))
