"""What a service may be: its spec (name, repository or git remote, branch, host, domain)
and the rules each field follows, checked before a service is created or changed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from controlplane.services import gitsources

SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


# Preview environments are named ``<service>-pr-<n>``: a service named so would collide.
PREVIEW_SUFFIX = re.compile(r"-pr-[0-9]+$")


REPOSITORY_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20~^:?*\[\\;&|$`'\"<>(){}!]|\.\.|@\{|//")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A GitHub service names ``repository``; one tracking any git remote ``git``
    instead (its branch, when None, is the remote's HEAD)."""

    name: str
    repository: str | None
    branch: str | None
    host: str
    compose_path: str | None = None
    port: int | None = None
    domain: str | None = None
    watch_paths: list[str] = field(default_factory=list)
    track_tags: str | None = None
    git: gitsources.GitSource | None = None


def spec_from(fields: dict[str, Any]) -> ServiceSpec:
    """A spec from the API's fields (``POST /v1/services``; the CLI sends the same)."""
    fields = dict(fields)
    git_url = fields.pop("git_url", None)
    git = gitsources.GitSource(
        url=git_url or "",
        token=fields.pop("git_token", None),
        ssh_key=fields.pop("git_ssh_key", None),
        poll_interval=fields.pop("poll_interval", None) or gitsources.DEFAULT_POLL_INTERVAL,
    )
    return ServiceSpec(**fields, git=git if git_url is not None else None)


def valid_domain(domain: str) -> bool:
    labels = domain.split(".")
    return len(domain) <= 253 and len(labels) >= 2 and all(DOMAIN_LABEL.match(x) for x in labels)


def valid_branch(branch: str) -> bool:
    return (
        0 < len(branch) <= 255
        and not BRANCH_FORBIDDEN.search(branch)
        and not branch.startswith(("-", "/"))
        and not branch.endswith((".lock", "/", "."))
    )


def valid_tag_pattern(pattern: str) -> bool:
    """A glob of tag names (``v*``, ``release-?.*``): a valid ref name once its ``*`` and
    ``?`` are taken for letters."""
    return valid_branch(pattern.replace("*", "x").replace("?", "x"))


def valid_compose_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and ".." not in parts and "" not in parts


def validate_spec(spec: ServiceSpec) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if not SERVICE_NAME.match(spec.name):
        errors["name"] = ["lowercase letters, digits and hyphens, starting with a letter"]
    elif PREVIEW_SUFFIX.search(spec.name):
        errors["name"] = ["must not end in -pr-<number>: that is how previews are named"]
    if not REPOSITORY_NAME.match(spec.repository or ""):
        errors["repository"] = ["must be owner/name"]
    if not valid_branch(spec.branch or ""):
        errors["branch"] = ["not a valid branch name"]
    if spec.track_tags is not None and not valid_tag_pattern(spec.track_tags):
        errors["track_tags"] = ["a glob of tag names such as v*"]
    if spec.compose_path is not None and not valid_compose_path(spec.compose_path):
        errors["compose_path"] = ["a relative path inside the repository, without '..'"]
    if spec.port is not None and not 1 <= spec.port <= 65535:
        errors["port"] = ["between 1 and 65535"]
    if spec.domain is not None and not valid_domain(spec.domain):
        errors["domain"] = ["not a valid host name"]
    return errors
