"""The status report: where each environment stands once the tick has applied.

Built from what Docker shows after applying (never from what the agent meant to do), the
failures the agent remembers, and the last usage sample; sent as
:class:`contracts.agentwire.AgentReport`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from contracts.agentwire import (
    AgentReport,
    ContainerReport,
    DesiredEnvironment,
    DesiredState,
    EnvironmentReport,
    ReportState,
)
from hostagent.apply import EnvironmentOutcome
from hostagent.client import AGENT_VERSION
from hostagent.confighash import config_hash
from hostagent.metrics import Sample, environment_usage
from hostagent.observe import ObservedContainer, ObservedEnvironment, ObservedState
from hostagent.plan import failure_key


@dataclass(frozen=True)
class Failure:
    """A deployment that did not come up: reported as failed until the state moves on."""

    environment: str
    deployment_id: int | None
    error: str
    logs: str | None
    refused: bool = False


def _container(container: ObservedContainer) -> ContainerReport:
    c = container
    return ContainerReport(c.id, c.name, c.image, c.status, c.health, c.restart_count)


def _environment_status(
    env: DesiredEnvironment,
    observed: ObservedEnvironment,
    digest: str,
    failure: Failure | None,
    outcome: EnvironmentOutcome | None,
) -> EnvironmentReport:
    """The status of one desired environment, from what Docker shows after applying."""
    if env.mode == "container":
        current = [c for c in observed.app_containers if c.config_hash == digest and c.running]
        serving = [c for c in current if c.serving]
        # Running once every replica serves; the newest one's address stands for them.
        running = len(serving) >= env.replicas
        healthy = running
        address = serving[-1].address(env.port) if serving else None
    else:
        containers = observed.compose_containers
        present = {c.compose_service for c in containers}
        settled = [c for c in containers if c.running or c.exit_code == 0]
        running = (
            bool(containers)
            and all(c.config_hash == digest for c in containers)
            and all(service in present for service in env.compose_services)
            and len(settled) == len(containers)
        )
        healthy = running and all(c.health in (None, "healthy") for c in containers)
        routed = next(
            (c for c in containers if c.compose_service == env.routed_service and c.running),
            None,
        )
        address = routed.address(env.port) if routed else None
    state = ReportState.RUNNING if running else ReportState.STARTING
    error = logs = None
    if failure is not None:
        state = ReportState.REFUSED if failure.refused else ReportState.FAILED
        healthy, error, logs = False, failure.error, failure.logs
    elif outcome is not None and outcome.error:
        error = outcome.error  # transient: still "starting", tried again next tick
    return EnvironmentReport(
        name=env.name,
        deployment_id=env.deployment_id,
        state=state,
        healthy=bool(healthy),
        address=address,
        error=error,
        logs=logs,
        containers=tuple(_container(c) for c in observed.containers),
    )


def build_report(
    desired: DesiredState,
    observed: ObservedState,
    outcomes: Mapping[str, EnvironmentOutcome],
    failures: Mapping[str, Failure],
    publish_host: str = "",
    *,
    proxy_network: str = "",
    sample: Sample | None = None,
) -> AgentReport:
    """The report of the generation just applied; each environment still there carries
    its usage from ``sample`` (none without one)."""
    environments: list[EnvironmentReport] = []
    for env in desired.environments:
        digest = config_hash(env, publish_host, desired.routing, proxy_network=proxy_network)
        environments.append(
            _environment_status(
                env,
                observed.get(env.name),
                digest,
                failures.get(failure_key(env, digest)),
                outcomes.get(env.name),
            )
        )
    for refused in desired.refused:
        if refused.withheld:
            continue  # the control plane withheld it and has said why already
        environments.append(
            EnvironmentReport(
                name=refused.name,
                deployment_id=refused.deployment_id,
                state=ReportState.REFUSED,
                error=refused.reason,
                containers=tuple(_container(c) for c in observed.get(refused.name).containers),
            )
        )
    if sample is not None:
        environments = [
            dataclasses.replace(item, usage=environment_usage(sample.readings, item.name))
            for item in environments
        ]
    for name, outcome in outcomes.items():
        if outcome.state == "removed":
            environments.append(EnvironmentReport(name, outcome.deployment_id, ReportState.REMOVED))
    return AgentReport(desired.generation, AGENT_VERSION, tuple(environments))
