"""Preview environments: one per pull request to a tracked branch, built from the PR's
head commit, torn down when it closes or idles, never left behind.

Teardown is idempotent: every step checks what is already done, so a ``closed``
delivered twice or a teardown interrupted halfway ends in the same clean state.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from github import Github
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controlplane.errors import NotFound, PermanentError, TransientError, ValidationFailed
from controlplane.github.app import GitHubApp
from controlplane.models import (
    Build,
    Deployment,
    Environment,
    Host,
    Service,
    WebhookDelivery,
    utcnow,
)
from controlplane.services import audit, desired, effects, pushes
from controlplane.services.outcomes import HandlerContext, Outcome

log = logging.getLogger(__name__)

OPENING = ("opened", "reopened", "synchronize")


def preview_name(service: Service, number: int) -> str:
    return f"{service.name}-pr-{number}"


def preview_domain(service: Service, number: int, preview_zone: str) -> str | None:
    """``pr-<n>.<service domain>``, or ``<service>-pr-<n>.<PORTSIDE_PREVIEW_DOMAIN>``."""
    if service.domain:
        return f"pr-{number}.{service.domain}"
    if preview_zone:
        return f"{preview_name(service, number)}.{preview_zone}"
    return None


def _preview_host(session: Session, service: Service) -> int:
    """A host marked for previews if there is one, else the service's own."""
    marked = session.scalar(
        select(Host.id).where(Host.accepts_previews.is_(True)).order_by(Host.id)
    )
    return marked if marked is not None else service.host_id


def _pull_request(delivery: WebhookDelivery) -> dict[str, Any]:
    pull = delivery.payload.get("pull_request")
    if not isinstance(pull, dict) or not isinstance(delivery.payload.get("number"), int):
        raise ValidationFailed("the payload has no pull request")
    return pull


def _is_fork(pull: dict[str, Any], full_name: str) -> bool:
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
    """Create (or bring back) the preview and start the build of the PR's head."""
    name = preview_name(service, number)
    head = pull.get("head") or {}
    environment = session.scalar(select(Environment).where(Environment.name == name))
    if environment is None:
        environment = Environment(
            service_id=service.id,
            host_id=_preview_host(session, service),
            name=name,
            kind="preview",
            pr_number=number,
            branch=str(head.get("ref") or ""),
            status="pending",
        )
        session.add(environment)
    environment.status = "building" if environment.status == "inactive" else environment.status
    environment.branch = str(head.get("ref") or environment.branch)
    environment.pr_author = str((pull.get("user") or {}).get("login") or "")[:255] or None
    environment.from_fork = from_fork
    environment.domain = preview_domain(service, number, preview_zone)
    environment.last_activity_at = utcnow()
    environment.closed_at = None
    environment.closed_by = None
    environment.closed_reason = None
    session.flush()
    sha = str(head.get("sha") or "")
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


def teardown(
    session: Session, environment: Environment, actor: str, reason: str
) -> list[dict[str, Any]]:
    """Take a preview out of its host's desired state; its images are deleted from the
    registry and GitHub told after the commit."""
    images: list[dict[str, Any]] = []
    builds = session.scalars(select(Build).where(Build.environment_id == environment.id))
    for build in builds:
        images.extend(image for image in (build.images or {}).values() if image.get("digest"))
        if build.status in ("queued", "running"):
            build.status = "cancelled"
            build.error = f"the preview was removed ({reason})"
            build.finished_at = utcnow()
    session.execute(
        update(Deployment)
        .where(Deployment.environment_id == environment.id, Deployment.status != "inactive")
        .values(status="inactive")
    )
    if environment.status != "inactive" or environment.current_deployment_id is not None:
        environment.status = "inactive"
        environment.current_deployment_id = None
        environment.generation += 1
        environment.closed_at = utcnow()
        environment.closed_by = actor
        environment.closed_reason = reason
        desired.bump(session, environment.host_id)
        audit.record(
            session, actor, "environment.teardown", "environment", environment.id, reason=reason
        )
        effects.note_notification(session, "preview_removed", environment.id)
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
        fork = _is_fork(pull, full_name)
        if fork and not service.fork_previews:
            tracked = False
        if action == "closed" or (action == "edited" and not tracked):
            if existing is not None and existing.status != "inactive":
                reason = "merged" if pull.get("merged") else "closed"
                if action == "edited":
                    reason = f"base changed to {base}"
                teardown(session, existing, actor, reason)
                notes.append(f"{name}: torn down ({reason})")
            continue
        if action not in (*OPENING, "edited") or not tracked:
            continue
        _environment, build = open_preview(
            session,
            service,
            number,
            pull,
            from_fork=fork,
            preview_zone=context.preview_zone,
            delivery_id=delivery.id,
        )
        notes.append(
            f"{name}: build {build.id} of {build.commit_sha[:7]}"
            if build
            else f"{name}: up to date"
        )
    if not notes:
        return Outcome("ignored", f"pull request #{number} ({action}) targets no tracked branch")
    return Outcome("processed", "; ".join(notes))


def stale_previews(
    session: Session, now: dt.datetime | None = None
) -> list[tuple[Environment, str]]:
    """Previews idle past their service's TTL, and the oldest over the per-service limit."""
    now = now or utcnow()
    found: list[tuple[Environment, str]] = []
    services = session.scalars(select(Service).where(Service.deleted_at.is_(None)))
    for service in services:
        live = list(
            session.scalars(
                select(Environment)
                .where(
                    Environment.service_id == service.id,
                    Environment.kind == "preview",
                    Environment.status != "inactive",
                )
                .order_by(Environment.last_activity_at.desc())
            )
        )
        ttl = dt.timedelta(seconds=service.preview_ttl_seconds)
        for index, environment in enumerate(live):
            if now - environment.last_activity_at > ttl:
                found.append((environment, f"idle for more than {ttl}"))
            elif index >= service.max_previews:
                found.append((environment, f"over the limit of {service.max_previews} previews"))
    return found


def closed_on_github(session: Session, github: GitHubApp) -> list[tuple[Environment, str]]:
    """Live previews whose pull request GitHub says is closed (a missed ``closed``)."""
    found: list[tuple[Environment, str]] = []
    live = session.scalars(
        select(Environment).where(Environment.kind == "preview", Environment.status != "inactive")
    )
    for environment in live:
        repository = environment.service.repository
        if repository is None or environment.pr_number is None:
            continue
        number = environment.pr_number

        def state_of(
            client: Github, full_name: str = repository.full_name, number: int = number
        ) -> str:
            return str(client.get_repo(full_name).get_pull(number).state)

        try:
            state = github.call(repository.installation_id, f"state of PR #{number}", state_of)
        except (TransientError, PermanentError) as exc:
            log.warning("cannot check PR #%s of %s: %s", number, repository.full_name, exc)
            continue
        if state == "closed":
            found.append((environment, "pull request closed (delivery missed)"))
    return found


def get_environment(session: Session, environment_id: int) -> Environment:
    environment = session.get(Environment, environment_id)
    if environment is None:
        raise NotFound(f"environment {environment_id} does not exist")
    return environment


def redeploy(session: Session, environment_id: int, actor: str) -> Build:
    """A new build of the environment's current commit (a person asked for it)."""
    environment = get_environment(session, environment_id)
    if environment.status == "inactive" or not environment.head_sha:
        raise ValidationFailed(
            "nothing to redeploy", details={"environment": ["inactive or never built"]}
        )
    build = pushes.start_build(
        session,
        environment.service,
        environment,
        environment.head_sha,
        branch=environment.branch,
        trigger_key=f"redeploy:{utcnow().timestamp():.6f}",
        author=actor,
    )
    assert build is not None  # the trigger key is new
    session.flush()
    audit.record(
        session, actor, "environment.redeploy", "environment", environment.id, build=build.id
    )
    return build


def approve_secrets(session: Session, environment_id: int, actor: str) -> Environment:
    environment = get_environment(session, environment_id)
    if environment.head_sha and not environment.secrets_approved_for(environment.head_sha):
        environment.secrets_approved_sha = environment.head_sha
        environment.generation += 1
        desired.bump(session, environment.host_id)
        audit.record(session, actor, "environment.approve_secrets", "environment", environment.id)
    return environment
