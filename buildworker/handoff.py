"""What one build step hands the next on the same node, in the next step's Celery message.

The last exchange of a step ends it and claims the next (``POST .../finish`` with the
worker's name), so the next step starts with its claim in hand; it starts with the
images, compose file and routed service the steps before it found, too. Both travel as
the ``handoff`` argument of the next task: the state in clear (what Flower shows of a
build), the claim sealed with a key derived from the worker's token, since it carries the
build's secrets (build arguments, registry credentials) and the broker is no place for
them in clear. Any process of a worker holding that token can open it; a claim that
cannot be opened is claimed again.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

# A step's claim, as the control plane answers it (ClaimedStepSchema).
Claim = dict[str, Any]
# What the steps found so far: images (by key), the compose file, its routed service.
State = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Handoff:
    state: State = field(default_factory=dict)
    # The next step's claim, when it came with the previous step's finish.
    claim: Claim | None = None

    def unclaimed(self) -> Handoff:
        """The same state without the claim: the step claims itself again (a retry)."""
        return Handoff(self.state)


class Sealer:
    """Seals hand-offs for the processes of the workers holding ``token``."""

    def __init__(self, token: str) -> None:
        digest = hashlib.sha256(b"portside step hand-off\0" + token.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def to_message(self, handoff: Handoff) -> dict[str, Any]:
        claim = json.dumps(handoff.claim).encode() if handoff.claim is not None else None
        return {
            "state": handoff.state,
            "claim": self._fernet.encrypt(claim).decode() if claim is not None else None,
        }

    def from_message(self, message: dict[str, Any] | None) -> Handoff | None:
        if not message:
            return None
        claim = None
        if message.get("claim"):
            try:
                claim = json.loads(self._fernet.decrypt(message["claim"].encode()))
            except (InvalidToken, ValueError):
                claim = None
        return Handoff(dict(message.get("state") or {}), claim)
