"""Names Docker accepts, made from names GitHub and git accept.

GitHub owners and repositories may be mixed case (``Codertocat``), branches may hold ``/``
and most punctuation, and Docker accepts neither. Lowercasing is safe for GitHub names
(they are case-insensitive there); any other change appends a short hash of the original,
so two different inputs never end up with the same name.
"""

from __future__ import annotations

import re

# Repository names are defined once, for the worker that pushes and the control plane
# that checks what was pushed.
from contracts.image_names import (
    HASH_CHARS,
    TAG,
    image_repository,
    pull_request_repository,
    short_hash,
)

__all__ = [
    "branch_tag",
    "compose_project_name",
    "image_repository",
    "pull_request_repository",
    "short_sha",
]

_HEX = re.compile(r"[0-9a-fA-F]+")
MAX_TAG = 128


def branch_tag(branch: str) -> str:
    """A Docker tag for ``branch``: the name itself when it is already a valid tag.

    Otherwise a sanitized prefix, ``..`` and a hash of the branch. Git forbids ``..`` in
    ref names, so a hashed tag can never equal a branch name that was kept unchanged.
    """
    if not branch:
        raise ValueError("branch is empty")
    if TAG.fullmatch(branch) and ".." not in branch:
        return branch
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", branch)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).rstrip(".")
    if not cleaned or not re.match(r"[A-Za-z0-9_]", cleaned):
        cleaned = "_" + cleaned
    prefix = cleaned[: MAX_TAG - 2 - HASH_CHARS].rstrip(".")
    return f"{prefix}..{short_hash(branch)}"


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
