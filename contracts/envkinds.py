"""Environment kinds, one rule for the control plane and the agent: ``production`` (one
per service, its branch or tags), ``preview`` (one per pull request, never trusted with
more than the compose allow-list) and any other a service is given, such as ``staging``,
which tracks a branch of its own and runs like production.

A kind is a lower-case DNS label of at most 16 characters: it names the environment
(``<service>-<kind>``) and its subdomain (``<kind>.<service domain>``).
"""

from __future__ import annotations

import re
from typing import TypeGuard

PRODUCTION = "production"
PREVIEW = "preview"
KIND_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,14}[a-z0-9])?")
# ``pr-<n>`` is how previews are named and reached: no other kind may take it.
_PREVIEW_LIKE = re.compile(r"pr-[0-9]+")


def is_kind(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and KIND_RE.fullmatch(value) is not None


def refusal(kind: str) -> str | None:
    """Why ``kind`` cannot be given to a new environment of a service, or None."""
    if not is_kind(kind):
        return (
            "1-16 lower-case letters, digits and hyphens, starting with a letter and not "
            "ending with a hyphen"
        )
    if kind in (PRODUCTION, PREVIEW) or _PREVIEW_LIKE.fullmatch(kind):
        return f"{kind!r} is Portside's own: production and previews exist already"
    return None


def runs_like_production(kind: str) -> bool:
    """Whether an environment of ``kind`` runs the team's reviewed code (with the compose
    keys an admin allowed), which only previews do not."""
    return kind != PREVIEW
