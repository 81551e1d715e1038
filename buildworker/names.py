"""Names Docker accepts, made from names GitHub and git accept.

GitHub owners and repositories may be mixed case (``Codertocat``), branches may hold ``/``
and most punctuation, and Docker accepts neither. Lowercasing is safe for GitHub names
(they are case-insensitive there); any other change appends a short hash of the original,
so two different inputs never end up with the same name.
"""

from __future__ import annotations

import hashlib
import re

# The distribution spec's path component: alphanumerics joined by ".", "_", "__" or "-"+.
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HEX = re.compile(r"[0-9a-fA-F]+")
MAX_TAG = 128
MAX_REPOSITORY = 255
_HASH_CHARS = 12


def _digest(value: str, length: int = _HASH_CHARS) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def _path_component(value: str, *, case_matters: bool = False) -> str:
    """``value`` lowercased; if that is not a valid component, sanitized plus a hash.

    ``case_matters`` is for compose service names, where ``Web`` and ``web`` differ.
    """
    lowered = value.lower()
    if _PATH_COMPONENT.fullmatch(lowered) and not (case_matters and lowered != value):
        return lowered
    cleaned = re.sub(r"[^a-z0-9]+", "-", lowered).strip("-") or "x"
    return f"{cleaned[:100]}-{_digest(value if case_matters else lowered, 8)}"


def image_repository(registry: str, owner_repo: str, compose_service: str | None = None) -> str:
    """``<registry>/<owner>/<repo>[-<service>]``, e.g. ``127.0.0.1:5001/codertocat/hello-world``.

    ``registry`` may carry a path prefix (``registry.example.com/team``); a scheme is dropped.
    """
    host, _, prefix = registry.split("://", 1)[-1].strip("/").partition("/")
    if not host:
        raise ValueError("registry is empty")
    owner, sep, repo = owner_repo.partition("/")
    if not (owner and sep and repo) or "/" in repo:
        raise ValueError(f"expected owner/repo, got {owner_repo!r}")
    last = (
        _path_component(f"{repo.lower()}-{compose_service}", case_matters=True)
        if compose_service
        else _path_component(repo)
    )
    parts = [_path_component(p) for p in prefix.split("/") if p]
    parts += [_path_component(owner), last]
    name = "/".join([host.lower(), *parts])
    if len(name) > MAX_REPOSITORY:
        raise ValueError(f"image repository name longer than {MAX_REPOSITORY} characters")
    return name


def pull_request_repository(
    registry: str, owner_repo: str, pr_number: int, compose_service: str | None = None
) -> str:
    """``<registry>/<owner>/<repo>/pr-<n>[/<service>]``: the images of a fork's pull request.

    A name of its own, one path component deeper than any of :func:`image_repository`'s,
    so a fork's build can never write over an image production builds or deploys.
    """
    if pr_number < 1:
        raise ValueError(f"not a pull request number: {pr_number!r}")
    parts = [image_repository(registry, owner_repo), f"pr-{pr_number}"]
    if compose_service:
        parts.append(_path_component(compose_service, case_matters=True))
    name = "/".join(parts)
    if len(name) > MAX_REPOSITORY:
        raise ValueError(f"image repository name longer than {MAX_REPOSITORY} characters")
    return name


def branch_tag(branch: str) -> str:
    """A Docker tag for ``branch``: the name itself when it is already a valid tag.

    Otherwise a sanitized prefix, ``..`` and a hash of the branch. Git forbids ``..`` in
    ref names, so a hashed tag can never equal a branch name that was kept unchanged.
    """
    if not branch:
        raise ValueError("branch is empty")
    if _TAG.fullmatch(branch) and ".." not in branch:
        return branch
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", branch)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).rstrip(".")
    if not cleaned or not re.match(r"[A-Za-z0-9_]", cleaned):
        cleaned = "_" + cleaned
    prefix = cleaned[: MAX_TAG - 2 - _HASH_CHARS].rstrip(".")
    return f"{prefix}..{_digest(branch)}"


def compose_project_name(name: str) -> str:
    """A ``docker compose -p`` name: lowercase ``[a-z0-9][a-z0-9_-]*``."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).lstrip("_-")
    if not cleaned:
        raise ValueError(f"no usable characters in project name {name!r}")
    return cleaned


def short_sha(sha: str) -> str:
    """The first 12 hex digits of a commit SHA, as used in image tags."""
    if len(sha) < 12 or not _HEX.fullmatch(sha):
        raise ValueError(f"not a commit SHA: {sha!r}")
    return sha[:12].lower()
