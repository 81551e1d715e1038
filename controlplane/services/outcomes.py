"""The result of handling one delivery, shared by every event handler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a delivery; ``ignored`` ones say why."""

    status: Literal["processed", "ignored"]
    reason: str
