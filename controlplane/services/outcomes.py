"""The result of handling one delivery, shared by every event handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from controlplane.github.app import GitHubApp


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a delivery; ``ignored`` ones say why."""

    status: Literal["processed", "ignored"]
    reason: str


@dataclass(frozen=True, slots=True)
class HandlerContext:
    """What event handlers may use besides the session."""

    github: GitHubApp | None = None
    preview_zone: str = ""


@dataclass(frozen=True, slots=True)
class Effects:
    """Work a processed delivery leaves for after its commit."""

    builds: list[int] = field(default_factory=list)
