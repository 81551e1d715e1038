"""Why an environment is not running yet, computed when asked: the approval, the checks,
the build or the host agent it waits for, so a ``pending`` (or ``building``,
``deploying``) status says what to look at instead of leaving the reader to guess."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.models import Build, Deployment, Environment, Host
from controlplane.services import dispatch, gates, hosts, placements
from controlplane.statuses import BuildStatus, DeploymentStatus, EnvironmentStatus

# The statuses of an environment that wait for something to happen.
WAITING_STATUSES = (
    EnvironmentStatus.PENDING,
    EnvironmentStatus.AWAITING_APPROVAL,
    EnvironmentStatus.AWAITING_CHECKS,
    EnvironmentStatus.BUILDING,
    EnvironmentStatus.DEPLOYING,
)


def _build_in_flight(session: Session, environment: Environment) -> Build | None:
    return session.scalar(
        select(Build)
        .where(
            Build.environment_id == environment.id,
            Build.status.in_((BuildStatus.QUEUED, BuildStatus.RUNNING)),
        )
        .order_by(Build.id.desc())
        .limit(1)
    )


def pending_reason(session: Session, environment: Environment, agent_interval: int) -> str | None:
    """What a waiting environment waits for, most pressing first, joined by ``; ``: an
    approval, a queued or running build (with why a queued one is not taken), no agent of
    its host seen within ``is_online``'s window, or the agent to apply a deployment it
    has not reported yet. None when its status waits for nothing or Portside cannot tell."""
    if environment.status not in WAITING_STATUSES:
        return None
    reasons: list[str] = []
    if environment.status in gates.HELD and environment.held_build_id is not None:
        reasons.append(environment.status_reason or environment.status.replace("_", " "))
    elif environment.status == EnvironmentStatus.AWAITING_APPROVAL:
        sha = f" of {environment.head_sha[:7]}" if environment.head_sha else ""
        reasons.append(f"waiting for approval{sha}")
    build = _build_in_flight(session, environment)
    if build is not None:
        waiting = dispatch.waiting_reason(session, build)
        state = f"{build.status}: {waiting}" if waiting else build.status
        reasons.append(f"waiting for build #{build.id} ({state})")
    host_ids = placements.host_ids(environment)
    for host_id in host_ids:
        host = session.get(Host, host_id)
        if host is None:
            continue
        if not hosts.is_online(host, agent_interval):
            reasons.append(f"no agent online for host {host.name}")
        elif build is None and environment.current_deployment_id is not None:
            deployment = session.get(Deployment, environment.current_deployment_id)
            # On several hosts, only those whose agent has not reported it running yet.
            if (
                deployment is not None
                and deployment.status == DeploymentStatus.PENDING
                and (
                    len(host_ids) == 1
                    or not placements.reports_running(host, environment.name, deployment.id)
                )
            ):
                reasons.append(
                    f"waiting for host {host.name}'s agent to run deployment #{deployment.id}"
                )
    return "; ".join(reasons) or None
