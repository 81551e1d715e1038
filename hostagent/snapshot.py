"""The desired-state snapshot as this agent takes it: checked at the edge, previews limited.

The snapshot's types and rules are the wire contract (:mod:`contracts.agentwire`); here a
body that breaks them becomes :class:`InvalidDesiredState` (transient: the agent keeps its
last good state and asks again), and each preview gets no more than this host allows.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from contracts.agentwire import (
    DesiredEnvironment,
    DesiredState,
    RefusedEnvironment,
    Resources,
    WireError,
    memory_bytes,
)
from hostagent.errors import InvalidDesiredState

log = logging.getLogger(__name__)


def parse_desired_state(value: object) -> DesiredState:
    """A snapshot body checked by the contract; InvalidDesiredState naming the bad field."""
    try:
        return DesiredState.from_json(value)
    except WireError as exc:
        raise InvalidDesiredState(str(exc)) from None


def parse_environment(value: object, where: str) -> DesiredEnvironment:
    """One snapshot entry checked by the contract; InvalidDesiredState naming the field."""
    try:
        return DesiredEnvironment.from_json(value, where)
    except WireError as exc:
        raise InvalidDesiredState(str(exc)) from None


@dataclass(frozen=True)
class PreviewLimits:
    """What a whole preview may use at most (its containers share it) when its desired
    state asks for no tighter limit, and how many compose services it may run."""

    cpus: float = 1.0
    memory: str = "512m"
    pids: int = 256
    services: int = 16

    def tighten(self, resources: Resources) -> Resources:
        """``resources`` with each limit no looser than these defaults."""
        cpus = self.cpus if resources.cpus is None else min(resources.cpus, self.cpus)
        memory = resources.memory
        if memory is None or memory_bytes(memory) > memory_bytes(self.memory):
            memory = self.memory
        pids = self.pids if resources.pids is None else min(resources.pids, self.pids)
        return Resources(cpus=cpus, memory=memory, restart=resources.restart, pids=pids)


def limit_previews(state: DesiredState, limits: PreviewLimits) -> DesiredState:
    """``state`` with every preview's resources tightened to ``limits``.

    A preview with more compose services than ``limits.services`` is refused on its own:
    its budget split that many ways would leave each next to nothing.
    """
    environments: list[DesiredEnvironment] = []
    refused = list(state.refused)
    for env in state.environments:
        if env.kind != "preview":
            environments.append(env)
        elif len(env.compose_services) > limits.services:
            reason = (
                f"compose file refused: services: a preview runs at most "
                f"{limits.services} services, this file has {len(env.compose_services)}"
            )
            log.warning("environment %s: %s", env.name, reason)
            refused.append(RefusedEnvironment(env.name, env.deployment_id, reason))
        else:
            environments.append(dataclasses.replace(env, resources=limits.tighten(env.resources)))
    return dataclasses.replace(state, environments=tuple(environments), refused=tuple(refused))
