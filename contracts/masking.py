"""Secret masking for any text that leaves Portside: build logs, and what is written to
GitHub (commit statuses, PR comments).

Known values are replaced by ``***``, longest first so a secret containing another is
hidden whole. Credentials whose value the writer may not know are recognised by their
shape: GitHub tokens, Portside API tokens and a URL's ``user:password@``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# Shorter values would hide ordinary words and numbers, and are no secret anyway.
MIN_SECRET_LENGTH = 4
_SHAPES = re.compile(
    r"\bgh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens (installation tokens are ghs_)
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bps_[A-Za-z0-9]+_[A-Za-z0-9_-]{16,}"  # Portside API tokens
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"  # user:password@ in a URL
)


def mask(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every value of ``secrets`` and every credential-shaped word hidden."""
    known = {secret for secret in secrets if secret and len(secret) >= MIN_SECRET_LENGTH}
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _SHAPES.sub(MASK, text)
