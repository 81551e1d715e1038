"""What one build step hands the next on the same node, in the next step's Celery message.

The last exchange of a step ends it and claims the next (``POST .../finish`` with the
worker's name), so the next step starts with its claim in hand; it starts with the
images, compose file and routed service the steps before it found, too. Both travel as
the ``handoff`` argument of the next task, sealed whole (Fernet: encrypted and
authenticated) with a key derived from the worker's token and bound to the build, the
attempt and the step it is for. The claim carries the build's secrets (build arguments,
registry credentials), and the state decides what is pushed and deployed: whoever can
write to the broker (every worker holds its password) must neither read them nor forge
or move them to another build. A hand-off that does not open for this exact step is
refused; the message is dropped and the build, no longer heartbeating, is taken over.
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


# A hand-off waits in its node's queue behind at most that node's other builds; an older
# one is a replayed message, not a late one.
HANDOFF_TTL_SECONDS = 6 * 3600


class HandoffRefused(Exception):
    """A hand-off that is not this worker's, not for this step, forged or too old."""


class Sealer:
    """Seals hand-offs for the processes of the workers holding ``token``."""

    def __init__(self, token: str) -> None:
        digest = hashlib.sha256(b"portside step hand-off\0" + token.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, handoff: Handoff, build_id: int, attempt: int, step: str) -> str:
        """The hand-off for ``step`` of this build attempt, as the next message carries it."""
        body = {
            "build_id": build_id,
            "attempt": attempt,
            "step": step,
            "state": handoff.state,
            "claim": handoff.claim,
        }
        return self._fernet.encrypt(json.dumps(body).encode()).decode()

    def open(self, sealed: str, build_id: int, attempt: int, step: str) -> Handoff:
        """The hand-off sealed for exactly this step of this build attempt, or refused."""
        try:
            body = json.loads(self._fernet.decrypt(sealed.encode(), ttl=HANDOFF_TTL_SECONDS))
        except (InvalidToken, ValueError, AttributeError):
            raise HandoffRefused("the hand-off does not open with this worker's key") from None
        if not isinstance(body, dict) or (
            body.get("build_id"),
            body.get("attempt"),
            body.get("step"),
        ) != (build_id, attempt, step):
            raise HandoffRefused(f"the hand-off is not for {step} of build {build_id}/{attempt}")
        state, claim = body.get("state"), body.get("claim")
        if not isinstance(state, dict) or not (claim is None or isinstance(claim, dict)):
            raise HandoffRefused("the hand-off is malformed")
        return Handoff(state, claim)
