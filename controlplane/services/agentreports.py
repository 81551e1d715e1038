"""The agents' reports: what a host runs moves its deployments to active or failed."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from contracts.agentwire import AgentReport, EnvironmentReport, ReportState
from contracts.statuses import DeploymentStatus
from controlplane.models import Deployment, Environment, Host, utcnow
from controlplane.services import audit, effects, gates, generations, placements
from controlplane.services.rollbacks import previous_active
from controlplane.statuses import EnvironmentStatus


def record_status(session: Session, host: Host, report: AgentReport) -> None:
    """Apply an agent's report: activate healthy deployments, fail and revert broken ones.

    ``refused`` means the agent will not run the deployment (its snapshot entry or compose
    file broke the rules) and keeps whatever it ran for the environment: the deployment
    fails, the environment shows ``refused`` with the agent's reason, nothing is reverted.
    """
    host.last_seen_at = utcnow()
    host.agent_version = (report.agent_version or "")[:64] or None
    host.applied_generation = report.generation
    host.observed = report.to_json()
    for item in report.environments:
        environment = session.scalar(
            select(Environment).where(placements.placed_on(host.id), Environment.name == item.name)
        )
        if environment is None or item.deployment_id is None:
            continue
        deployment = session.get(Deployment, item.deployment_id)
        if deployment is None or deployment.environment_id != environment.id:
            continue
        if item.state == ReportState.RUNNING and item.healthy:
            # Active once every host runs it; the address is its own (first) host's.
            if placements.running_everywhere(session, environment, deployment.id, host):
                address = (
                    item.address
                    if environment.host_id == host.id
                    else placements.reported_address(session, environment, deployment.id)
                )
                _activate(session, environment, deployment, address)
        elif item.state == ReportState.FAILED and deployment.status in (
            DeploymentStatus.PENDING,
            DeploymentStatus.ACTIVE,
        ):
            _fail(session, environment, deployment, item)
        elif item.state == ReportState.REFUSED:
            _refused(session, environment, deployment, item)


def _refused(
    session: Session, environment: Environment, deployment: Deployment, item: EnvironmentReport
) -> None:
    reason = (item.error or "refused by the host agent")[:8000]
    if deployment.status == DeploymentStatus.PENDING:
        deployment.status = DeploymentStatus.FAILED
        deployment.error = reason
        audit.record(session, "agent", "deployment.refused", "deployment", deployment.id)
        effects.note_feedback(session, "deployment_failed", deployment.id)
        effects.note_notification(session, "deployment_failed", deployment.id)
    if environment.current_deployment_id == deployment.id and environment.status not in gates.HELD:
        environment.status = EnvironmentStatus.REFUSED
        environment.status_reason = reason


def _activate(
    session: Session, environment: Environment, deployment: Deployment, address: str | None
) -> None:
    if address:
        environment.address = address[:255]
    newly_active = deployment.status != DeploymentStatus.ACTIVE
    # A fork preview whose new head awaits approval keeps saying so while the approved
    # commit before it runs on; a refusal (of a later build's artifacts) stays shown while
    # the deployment before it serves, until a new deployment runs.
    if (
        environment.current_deployment_id == deployment.id
        and environment.status not in gates.HELD
        and (newly_active or environment.status != EnvironmentStatus.REFUSED)
    ):
        environment.status = EnvironmentStatus.RUNNING
        if newly_active:
            environment.status_reason = None
    if not newly_active:
        return
    deployment.status = DeploymentStatus.ACTIVE
    deployment.activated_at = utcnow()
    deployment.error = None
    session.execute(
        update(Deployment)
        .where(
            Deployment.environment_id == environment.id,
            Deployment.id != deployment.id,
            Deployment.status == DeploymentStatus.ACTIVE,
        )
        .values(status="superseded")
    )
    audit.record(session, "agent", "deployment.active", "deployment", deployment.id)
    effects.note_feedback(session, "deployment_active", deployment.id)
    effects.note_notification(session, "deployment_active", deployment.id)


def _fail(
    session: Session, environment: Environment, deployment: Deployment, item: EnvironmentReport
) -> None:
    error = item.error or "the agent could not run the deployment"
    logs = item.logs
    deployment.status = DeploymentStatus.FAILED
    deployment.error = (f"{error}\n{logs}" if logs else error)[:8000]
    audit.record(session, "agent", "deployment.failed", "deployment", deployment.id)
    effects.note_feedback(session, "deployment_failed", deployment.id)
    effects.note_notification(session, "deployment_failed", deployment.id)
    if environment.current_deployment_id != deployment.id:
        return
    previous = previous_active(session, environment, deployment)
    # Desired state goes back to what is still serving; nothing to run if nothing was.
    environment.current_deployment_id = previous.id if previous else None
    environment.status = EnvironmentStatus.RUNNING if previous else EnvironmentStatus.FAILED
    if previous is not None:
        previous.status = DeploymentStatus.ACTIVE
    environment.generation += 1
    generations.bump_environment(session, environment)
