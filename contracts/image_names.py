"""Where a service's images live in the registry: the names the build worker pushes to and
the control plane accepts, from one definition.

GitHub owners and repositories may be mixed case and hold characters Docker refuses.
Lowercasing is safe for GitHub names (they are case-insensitive there); any other change
appends a short hash of the original, so two different inputs never share a name.
"""

from __future__ import annotations

import hashlib
import re

# The distribution spec's path component: alphanumerics joined by ".", "_", "__" or "-"+.
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_REPOSITORY = 255
_HASH_CHARS = 12


def _digest(value: str, length: int = _HASH_CHARS) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def path_component(value: str, *, case_matters: bool = False) -> str:
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
        path_component(f"{repo.lower()}-{compose_service}", case_matters=True)
        if compose_service
        else path_component(repo)
    )
    parts = [path_component(p) for p in prefix.split("/") if p]
    parts += [path_component(owner), last]
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
        parts.append(path_component(compose_service, case_matters=True))
    name = "/".join(parts)
    if len(name) > MAX_REPOSITORY:
        raise ValueError(f"image repository name longer than {MAX_REPOSITORY} characters")
    return name
