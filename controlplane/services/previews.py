"""Preview environments: one per pull request to a tracked branch, built from the PR's
head commit, torn down when it closes or idles, never left behind.

Teardown is idempotent: every step checks what is already done, so a ``closed``
delivered twice or a teardown interrupted halfway ends in the same clean state.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from controlplane.errors import (
    ValidationFailed,
)
from controlplane.models import (
    Build,
    Deployment,
    Environment,
    Host,
    Service,
    WebhookDelivery,
    utcnow,
)
from controlplane.services import audit, effects, gates, generations, pushes
from controlplane.services.outcomes import HandlerContext, Outcome
from controlplane.services.previewcleanup import pushed_images
from controlplane.statuses import BuildStatus, DeploymentStatus, EnvironmentStatus

OPENING = ("opened", "reopened", "synchronize")


# Builds a teardown or a hold cancels: not finished, or built and held at a gate.
UNFINISHED = ("queued", "running", *gates.HELD)


NO_FORK_HOST = (
    "no host may run this fork's preview: fork previews run only on hosts marked untrusted "
    "that run no production environment; create one with "
    "`portside hosts create NAME --untrusted` (or set the service's "
    "fork_previews_on_trusted_hosts)"
)


def preview_name(service: Service, number: int) -> str:
    return f"{service.name}-pr-{number}"


def subdomain(service: Service, label: str, zone: str) -> str | None:
    """Where an environment of the service besides production is reached:
    ``<label>.<service domain>``, or ``<service>-<label>.<zone>`` (PORTSIDE_PREVIEW_DOMAIN);
    the label is ``pr-<n>`` for a preview, its kind for a staging environment."""
    if service.domain:
        return f"{label}.{service.domain}"
    if zone:
        return f"{service.name}-{label}.{zone}"
    return None


def preview_domain(service: Service, number: int, preview_zone: str) -> str | None:
    """``pr-<n>.<service domain>``, or ``<service>-pr-<n>.<PORTSIDE_PREVIEW_DOMAIN>``."""
    return subdomain(service, f"pr-{number}", preview_zone)


def _preview_host(session: Session, service: Service) -> int:
    """A host marked for previews if there is one, else the service's own."""
    marked = session.scalar(
        select(Host.id).where(Host.accepts_previews.is_(True)).order_by(Host.id)
    )
    return marked if marked is not None else service.host_id


def _production_hosts() -> Select[int]:
    return select(Environment.host_id).where(
        Environment.kind == "production", Environment.status != EnvironmentStatus.INACTIVE
    )


def fork_host(session: Session, service: Service, environment: Environment | None) -> int | None:
    """Where a fork's preview may run, or None when nowhere.

    Code nobody on the team reviewed runs only on a host marked untrusted that runs no
    production environment: the one it is on already if that qualifies, else the one with
    the fewest live environments. An admin may let a service's forks use the ordinary
    preview placement instead (``fork_previews_on_trusted_hosts``).
    """
    if service.fork_previews_on_trusted_hosts:
        return environment.host_id if environment is not None else _preview_host(session, service)
    eligible = select(Host.id).where(Host.untrusted.is_(True), Host.id.not_in(_production_hosts()))
    if environment is not None and session.scalar(eligible.where(Host.id == environment.host_id)):
        return environment.host_id
    live = func.count(Environment.id)
    chosen: int | None = session.scalar(
        eligible.outerjoin(
            Environment,
            (Environment.host_id == Host.id) & (Environment.status != EnvironmentStatus.INACTIVE),
        )
        .group_by(Host.id)
        .order_by(live, Host.id)
        .limit(1)
    )
    return chosen


def _pull_request(delivery: WebhookDelivery) -> dict[str, Any]:
    pull = delivery.payload.get("pull_request")
    if not isinstance(pull, dict) or not isinstance(delivery.payload.get("number"), int):
        raise ValidationFailed("the payload has no pull request")
    return pull


def is_fork(pull: dict[str, Any], full_name: str) -> bool:
    head_repo = (pull.get("head") or {}).get("repo")
    # A deleted fork leaves head.repo null: treat it as a fork.
    return not isinstance(head_repo, dict) or head_repo.get("full_name") != full_name


def open_preview(
    session: Session,
    service: Service,
    number: int,
    pull: dict[str, Any],
    *,
    from_fork: bool,
    preview_zone: str,
    delivery_id: int | None,
) -> tuple[Environment, Build | None]:
    """Create (or bring back) the preview and start the build of the PR's head; a fork's
    head is built only once a person approved that exact commit (see
    :func:`~controlplane.services.envactions.approve`)."""
    name = preview_name(service, number)
    head = pull.get("head") or {}
    sha = str(head.get("sha") or "")
    environment = session.scalar(select(Environment).where(Environment.name == name))
    if environment is None:
        host_id = fork_host(session, service, None) if from_fork else None
        environment = Environment(
            service_id=service.id,
            # A refused fork preview gets no deployment, so the placeholder runs nothing.
            host_id=host_id or (service.host_id if from_fork else _preview_host(session, service)),
            name=name,
            kind="preview",
            pr_number=number,
            branch=str(head.get("ref") or ""),
            status="pending",
        )
        session.add(environment)
    environment.status = (
        EnvironmentStatus.BUILDING
        if environment.status == EnvironmentStatus.INACTIVE
        else environment.status
    )
    environment.branch = str(head.get("ref") or environment.branch)
    environment.pr_author = str((pull.get("user") or {}).get("login") or "")[:255] or None
    # A PR never stops being a fork's (a deleted fork still is one).
    environment.from_fork = bool(environment.from_fork) or from_fork
    environment.domain = preview_domain(service, number, preview_zone)
    environment.last_activity_at = utcnow()
    environment.closed_at = None
    environment.closed_by = None
    environment.closed_reason = None
    session.flush()
    if environment.from_fork:
        environment.head_sha = sha
        build = advance_fork(
            session, environment, delivery_id=delivery_id, commit_message=pull.get("title")
        )
    else:
        build = pushes.start_build(
            session,
            service,
            environment,
            sha,
            branch=environment.branch,
            delivery_id=delivery_id,
            commit_message=pull.get("title"),
            author=environment.pr_author,
        )
    if build is not None:
        session.flush()
    return environment, build


def awaiting_reason(environment: Environment) -> str:
    sha = environment.head_sha or ""
    return (
        f"commit {sha[:7]} comes from a fork and waits for a maintainer to approve it: "
        f"`portside previews approve {environment.name} --sha {sha}` "
        f'or POST /v1/environments/{environment.id}/approve with {{"sha": "{sha}"}}'
    )


def advance_fork(
    session: Session,
    environment: Environment,
    *,
    delivery_id: int | None = None,
    commit_message: str | None = None,
    trigger_key: str = pushes.AUTOMATIC,
) -> Build | None:
    """Place a fork's preview and build its head if a person approved that commit;
    otherwise hold it (``refused`` without a host for it, else ``awaiting_approval``)."""
    service = environment.service
    host_id = fork_host(session, service, environment)
    if host_id is None:
        _hold(session, environment, "refused", NO_FORK_HOST)
        return None
    _move(session, environment, host_id)
    sha = environment.head_sha
    if not sha or environment.approved_sha != sha:
        if _hold(session, environment, "awaiting_approval", awaiting_reason(environment)):
            effects.note_feedback(session, "awaiting_approval", environment.id)
        return None
    build = pushes.start_build(
        session,
        service,
        environment,
        sha,
        branch=environment.branch,
        trigger_key=trigger_key,
        delivery_id=delivery_id,
        commit_message=commit_message,
        author=environment.pr_author,
        untrusted=True,
    )
    if build is not None:
        environment.status = EnvironmentStatus.BUILDING
        environment.status_reason = None
    return build


def _cancel_unfinished(builds: list[Build], why: str) -> None:
    for build in builds:
        if build.status in UNFINISHED:
            gates.release_hold(build.environment, build)
            build.status = BuildStatus.CANCELLED
            build.error = why
            build.finished_at = utcnow()


def _hold(session: Session, environment: Environment, status: str, reason: str) -> bool:
    """Stop a fork preview from moving on; True when its status or reason changed.

    Unfinished builds (of an earlier commit) are cancelled so none deploys meanwhile; a
    refused preview is also taken off its host.
    """
    unfinished = select(Build).where(
        Build.environment_id == environment.id, Build.status.in_(UNFINISHED)
    )
    _cancel_unfinished(list(session.scalars(unfinished)), f"the preview is {status}")
    if status == EnvironmentStatus.REFUSED and environment.current_deployment_id is not None:
        _withdraw(session, environment)
    changed = (environment.status, environment.status_reason) != (status, reason)
    environment.status = status
    environment.status_reason = reason
    return changed


def _withdraw(session: Session, environment: Environment) -> None:
    """Take the environment's deployments out of its host's desired state."""
    session.execute(
        update(Deployment)
        .where(
            Deployment.environment_id == environment.id,
            Deployment.status != DeploymentStatus.INACTIVE,
        )
        .values(status="inactive")
    )
    environment.current_deployment_id = None
    environment.generation += 1
    generations.bump(session, environment.host_id)


def _move(session: Session, environment: Environment, host_id: int) -> None:
    """Put the environment on ``host_id``; both hosts' desired states change."""
    if environment.host_id == host_id:
        return
    if environment.current_deployment_id is not None:
        generations.bump(session, environment.host_id)
        generations.bump(session, host_id)
        environment.generation += 1
    environment.host_id = host_id


def teardown(
    session: Session,
    environment: Environment,
    actor: str,
    reason: str,
    *,
    keep_images: bool = False,
) -> list[dict[str, Any]]:
    """Take a preview out of its host's desired state; its images are deleted from the
    registry and GitHub told after the commit. ``keep_images``: a staging environment's
    images live in the service's own repository, where production may run them
    (promoted, or the same digest built again), so they stay."""
    builds = list(session.scalars(select(Build).where(Build.environment_id == environment.id)))
    images = [] if keep_images else pushed_images(environment, builds)
    _cancel_unfinished(builds, f"the preview was removed ({reason})")
    session.execute(
        update(Deployment)
        .where(
            Deployment.environment_id == environment.id,
            Deployment.status != DeploymentStatus.INACTIVE,
        )
        .values(status="inactive")
    )
    if (
        environment.status != EnvironmentStatus.INACTIVE
        or environment.current_deployment_id is not None
    ):
        environment.status = EnvironmentStatus.INACTIVE
        environment.current_deployment_id = None
        environment.generation += 1
        environment.closed_at = utcnow()
        environment.closed_by = actor
        environment.closed_reason = reason
        generations.bump_environment(session, environment)  # a staging one runs on every host
        audit.record(
            session, actor, "environment.teardown", "environment", environment.id, reason=reason
        )
        effects.note_notification(session, "preview_removed", environment.id)
    if images:
        environment.images_pending = True
    effects.note_doomed_images(session, images)
    effects.note_feedback(session, "preview_removed", environment.id)
    return images


def handle_pull_request(
    session: Session, delivery: WebhookDelivery, context: HandlerContext
) -> Outcome:
    refusal = pushes.installation_refusal(session, delivery)
    if refusal:
        return Outcome("ignored", refusal)
    if delivery.repository_id is None or not delivery.repository_full_name:
        return Outcome("ignored", "pull request without a repository")
    if refusal := pushes.repository_refusal(session, delivery):
        return Outcome("ignored", refusal)
    pull = _pull_request(delivery)
    number = int(delivery.payload["number"])
    action = delivery.action or ""
    base = str((pull.get("base") or {}).get("ref") or "")
    full_name = delivery.repository_full_name
    actor = f"github:{(delivery.payload.get('sender') or {}).get('login') or 'unknown'}"
    services = pushes.tracking_services(session, delivery.repository_id, full_name)
    notes: list[str] = []
    for service in services:
        name = preview_name(service, number)
        existing = session.scalar(select(Environment).where(Environment.name == name))
        tracked = service.branch == base and service.previews_enabled
        fork = is_fork(pull, full_name)
        if fork and not service.fork_previews:
            tracked = False
        if action == "closed" or (action == "edited" and not tracked):
            if existing is not None and existing.status != EnvironmentStatus.INACTIVE:
                reason = "merged" if pull.get("merged") else "closed"
                if action == "edited":
                    reason = f"base changed to {base}"
                teardown(session, existing, actor, reason)
                notes.append(f"{name}: torn down ({reason})")
            continue
        if action not in (*OPENING, "edited") or not tracked:
            continue
        environment, build = open_preview(
            session,
            service,
            number,
            pull,
            from_fork=fork,
            preview_zone=context.preview_zone,
            delivery_id=delivery.id,
        )
        if build is not None:
            notes.append(f"{name}: build {build.id} of {build.commit_sha[:7]}")
        elif environment.status in (EnvironmentStatus.AWAITING_APPROVAL, EnvironmentStatus.REFUSED):
            notes.append(f"{name}: {environment.status} ({environment.status_reason})")
        else:
            notes.append(f"{name}: up to date")
    if not notes:
        return Outcome("ignored", f"pull request #{number} ({action}) targets no tracked branch")
    return Outcome("processed", "; ".join(notes))
