"""Watch paths: which files a push changed, and whether a service's globs match them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any


def glob_pattern(pattern: str) -> re.Pattern[str]:
    """A watch-path glob as a regex: ``*`` stays within a directory, ``**`` crosses them."""
    pattern = pattern.strip().lstrip("/")
    if pattern.endswith("/"):
        pattern += "**"
    out: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out) + r"\Z")


def matches_watch_paths(paths: Iterable[str], watch_paths: list[str]) -> bool:
    patterns = [glob_pattern(pattern) for pattern in watch_paths]
    return any(pattern.match(path) for path in paths for pattern in patterns)


def changed_paths(payload: dict[str, Any]) -> set[str]:
    paths: set[str] = set()
    commits = list(payload.get("commits") or [])
    if payload.get("head_commit"):
        commits.append(payload["head_commit"])
    for commit in commits:
        for key in ("added", "removed", "modified"):
            paths.update(p for p in commit.get(key) or [] if isinstance(p, str))
    return paths
