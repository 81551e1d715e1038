"""The agent's errors: one root, and the split that decides whether to retry.

Transient errors (network, 5xx, 429, a body we cannot trust) are retried with backoff
while the last good state keeps being reconciled; permanent ones (401/403/404, bad
configuration) are not retried blindly, since retrying cannot fix them.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientAgentError(AgentError):
    """Worth retrying later: the cause may go away by itself."""


class PermanentAgentError(AgentError):
    """Retrying the same thing will fail the same way; needs a human or a new state."""


class AgentConfigError(PermanentAgentError):
    """A ``PORTSIDE_*`` setting is missing or malformed; the message names it."""


class InvalidDesiredState(TransientAgentError):
    """The control plane answered a body that does not parse or validate.

    Transient on purpose: the agent keeps its last good state and asks again later,
    when a fixed control plane may answer something sensible.
    """


class EnvironmentRefused(PermanentAgentError):
    """The agent will not run this environment as given (its compose file breaks the policy).

    Nothing is started for it, what already runs for it is kept, and it is reported as
    ``refused`` with the reason until the desired state brings something else.
    """
