"""Execute planned actions against Docker, one environment at a time, each isolated.

An exception in one environment becomes that environment's outcome (with the error and
the new container's last log lines); the others go on. A new container that never gets
healthy is removed again and the old one keeps serving. The work itself is done by
:mod:`hostagent.containers` and :mod:`hostagent.composerun`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from hostagent.composerun import ComposeProjects
from hostagent.containers import docker_error
from hostagent.errors import EnvironmentRefused, PermanentAgentError
from hostagent.plan import (
    Action,
    ComposeDown,
    ComposeStartRouted,
    ComposeUp,
    ComposeWaitRouted,
    RemoveContainer,
    RemoveEnvironment,
    StartContainer,
    StopContainer,
    WaitHealthy,
    failure_key,
)

log = logging.getLogger(__name__)


@dataclass
class EnvironmentOutcome:
    """What applying one environment's actions came to; ``failure_key`` when it failed."""

    name: str
    state: str | None = None  # "failed", "refused", "starting" (transient), "removed" or None
    error: str | None = None
    logs: str | None = None
    failure_key: str | None = None
    deployment_id: int | None = None
    actions: list[str] = field(default_factory=list)


@dataclass
class Applier(ComposeProjects):
    """Applies a plan with this host's Docker client and settings."""

    def apply(self, actions: Iterable[Action]) -> dict[str, EnvironmentOutcome]:
        """Run each environment's actions in order; stop that environment at its first error."""
        by_env: dict[str, list[Action]] = {}
        for action in actions:
            by_env.setdefault(action.environment, []).append(action)
        outcomes: dict[str, EnvironmentOutcome] = {}
        for name, env_actions in by_env.items():
            outcomes[name] = self._apply_environment(name, env_actions)
        return outcomes

    def _apply_environment(self, name: str, actions: list[Action]) -> EnvironmentOutcome:
        outcome = EnvironmentOutcome(name)
        started: StartContainer | None = None
        for action in actions:
            outcome.actions.append(type(action).__name__)
            try:
                if isinstance(action, StartContainer):
                    started = action
                    outcome.deployment_id = action.spec.deployment_id
                    self.start_container(action)
                elif isinstance(action, WaitHealthy):
                    self.wait_healthy(action.name, action.spec)
                elif isinstance(action, StopContainer):
                    self.stop_container(action.container_id)
                elif isinstance(action, RemoveContainer):
                    self.remove_container(action.container_id)
                elif isinstance(action, ComposeUp):
                    outcome.deployment_id = action.spec.deployment_id
                    self.compose_up(action)
                elif isinstance(action, ComposeStartRouted):
                    outcome.deployment_id = action.spec.deployment_id
                    self.compose_start_routed(action)
                elif isinstance(action, ComposeWaitRouted):
                    self.compose_wait_routed(action)
                elif isinstance(action, ComposeDown):
                    self.compose_down(action.environment, remove_volumes=action.remove_volumes)
                elif isinstance(action, RemoveEnvironment):
                    outcome.deployment_id = action.deployment_id
                    self.remove_environment(action)
                    outcome.state = "removed"
            except Exception as exc:
                self._record_failure(outcome, action, started, exc)
                break
        return outcome

    def _record_failure(
        self,
        outcome: EnvironmentOutcome,
        action: Action,
        started: StartContainer | None,
        exc: Exception,
    ) -> None:
        error = docker_error(exc, f"{type(action).__name__} failed")
        logs = getattr(error, "logs", None)
        if started is not None and isinstance(action, StartContainer | WaitHealthy):
            # Never leave a broken new container behind; the old one keeps serving.
            logs = logs or self.container_logs(started.name)
            self.discard_container(started.name)
        if isinstance(action, ComposeStartRouted | ComposeWaitRouted):
            # The same for a compose switch: the old routed container keeps serving.
            last_lines = self.discard_routed(action.spec, action.config_hash)
            logs = logs or last_lines
        permanent = isinstance(error, PermanentAgentError)
        if isinstance(action, StartContainer | WaitHealthy) and started is not None and permanent:
            outcome.failure_key = failure_key(started.spec, started.config_hash)
        elif isinstance(action, ComposeUp | ComposeStartRouted | ComposeWaitRouted) and permanent:
            outcome.failure_key = failure_key(action.spec, action.config_hash)
        if isinstance(error, EnvironmentRefused):
            outcome.state = "refused"
        else:
            outcome.state = "failed" if outcome.failure_key else "starting"
        outcome.error = str(error)
        outcome.logs = logs
        log.warning("environment %s: %s", outcome.name, error)

    def remove_environment(self, action: RemoveEnvironment) -> None:
        log.info("environment %s: no longer desired, removing it", action.environment)
        if action.compose:
            self.compose_down(action.environment, remove_volumes=action.remove_volumes)
        for container_id in action.container_ids:
            self.remove_container(container_id, volumes=action.remove_volumes)


def describe(actions: Iterable[Action]) -> list[str]:
    """One line per action for the log, without the runtime env (it holds secrets)."""
    lines = []
    for action in actions:
        if isinstance(action, StartContainer | WaitHealthy | StopContainer | RemoveContainer):
            lines.append(f"{type(action).__name__} {action.environment} {action.name}")
        else:
            lines.append(f"{type(action).__name__} {action.environment}")
    return lines
