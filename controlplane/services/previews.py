"""Preview environments: one per pull request to a tracked branch, built from the PR's
head commit, torn down when it closes or idles, never left behind.

Teardown is idempotent: every step checks what is already done, so a ``closed``
delivered twice or a teardown interrupted halfway ends in the same clean state.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from github import Github
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from controlplane.errors import (
    Conflict,
    NotFound,
    PermanentError,
    TransientError,
    ValidationFailed,
)
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
from controlplane.services import audit, effects, gates, generations, pushes, registries
from controlplane.services.outcomes import HandlerContext, Outcome

log = logging.getLogger(__name__)

OPENING = ("opened", "reopened", "synchronize")
# Builds a teardown or a hold cancels: not finished, or built and held at a gate.
UNFINISHED = ("queued", "running", *gates.HELD)
# How a torn-down preview's status_reason starts while the registry refuses its images.
IMAGES_REFUSED = "the registry refused to delete this preview's images"
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
        Environment.kind == "production", Environment.status != "inactive"
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
            (Environment.host_id == Host.id) & (Environment.status != "inactive"),
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
    head is built only once a person approved that exact commit (see :func:`approve`)."""
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
    environment.status = "building" if environment.status == "inactive" else environment.status
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
        environment.status = "building"
        environment.status_reason = None
    return build


def _cancel_unfinished(builds: list[Build], why: str) -> None:
    for build in builds:
        if build.status in UNFINISHED:
            gates.release_hold(build.environment, build)
            build.status = "cancelled"
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
    if status == "refused" and environment.current_deployment_id is not None:
        _withdraw(session, environment)
    changed = (environment.status, environment.status_reason) != (status, reason)
    environment.status = status
    environment.status_reason = reason
    return changed


def _withdraw(session: Session, environment: Environment) -> None:
    """Take the environment's deployments out of its host's desired state."""
    session.execute(
        update(Deployment)
        .where(Deployment.environment_id == environment.id, Deployment.status != "inactive")
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
    images = [] if keep_images else _pushed_images(environment, builds)
    _cancel_unfinished(builds, f"the preview was removed ({reason})")
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


def _pushed_images(environment: Environment, builds: list[Build]) -> list[dict[str, Any]]:
    """The images the environment's builds pushed (by digest), each naming the environment."""
    return [
        {**image, "environment_id": environment.id}
        for build in builds
        for image in (build.images or {}).values()
        if image.get("digest")
    ]


def delete_images(
    session: Session,
    environment_id: int,
    images: list[dict[str, Any]],
    credentials_for: Callable[[str, int | None], registries.Credentials],
) -> bool:
    """Delete a torn-down preview's images from the registry; True when all are gone.

    A refusal (wrong or read-only credentials, deletes disabled) would otherwise leave
    them piling up unseen: it is logged as a warning, shown as the environment's
    ``status_reason``, and ``images_pending`` stays set so clean_up_previews tries again.
    Unreachable registries raise TransientError, for the task's retry."""
    environment = get_environment(session, environment_id)
    repository = environment.service.repository
    installation_id = repository.installation_id if repository else None
    refusals: list[str] = []
    shared = _used_elsewhere(session, environment)
    for image in images:
        if (image["repository"], image["digest"]) in shared:
            continue  # another environment's build pushed the very same image: keep it
        try:
            registries.delete_image(
                credentials_for(image["repository"], installation_id),
                image["repository"],
                image["digest"],
            )
        except registries.RegistryRefused as exc:
            refusals.append(str(exc))
    if refusals:
        reason = (
            f"{IMAGES_REFUSED} ({len(refusals)} of {len(images)}): {refusals[0]}; fix the "
            "registry's credentials (/v1/registries): the periodic preview clean-up tries again"
        )
        log.warning("environment %s: %s", environment.name, reason)
        environment.status_reason = reason
        return False
    environment.images_pending = False
    if environment.status_reason and environment.status_reason.startswith(IMAGES_REFUSED):
        environment.status_reason = None
    return True


def _used_elsewhere(session: Session, environment: Environment) -> set[tuple[str, str]]:
    """(repository, digest) of the images the service's other environments' builds pushed
    and still hold: a same-repository preview whose build came out identical to
    production's (same layers, from the production image's cache) shares its manifest, and
    deleting it by digest would delete production's."""
    others = session.scalars(
        select(Build).where(
            Build.service_id == environment.service_id,
            Build.environment_id != environment.id,
            Build.images_deleted_at.is_(None),
        )
    )
    return {
        (image["repository"], image["digest"])
        for build in others
        for image in (build.images or {}).values()
        if image.get("digest") and image.get("repository")
    }


def pending_image_deletions(session: Session) -> list[list[dict[str, Any]]]:
    """The images of each torn-down preview that the registry may still hold."""
    pending = session.scalars(
        select(Environment).where(
            Environment.status == "inactive", Environment.images_pending.is_(True)
        )
    )
    return [
        _pushed_images(
            environment,
            list(session.scalars(select(Build).where(Build.environment_id == environment.id))),
        )
        for environment in pending
    ]


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
            if existing is not None and existing.status != "inactive":
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
        elif environment.status in ("awaiting_approval", "refused"):
            notes.append(f"{name}: {environment.status} ({environment.status_reason})")
        else:
            notes.append(f"{name}: up to date")
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
    """A new build of the environment's current commit (a person asked for it); a fork's
    commit only once it is approved, and only where forks may run."""
    environment = get_environment(session, environment_id)
    if environment.status == "inactive" or not environment.head_sha:
        raise ValidationFailed(
            "nothing to redeploy", details={"environment": ["inactive or never built"]}
        )
    trigger_key = f"redeploy:{utcnow().timestamp():.6f}"
    if environment.from_fork:
        if environment.approved_sha != environment.head_sha:
            raise Conflict(
                f"commit {environment.head_sha[:7]} of this fork is not approved; "
                "approve it first: "
                f"portside previews approve {environment.name} --sha {environment.head_sha}"
            )
        build = advance_fork(session, environment, trigger_key=trigger_key)
        if build is None:
            raise Conflict(environment.status_reason or "the preview cannot be built now")
    else:
        build = pushes.start_build(
            session,
            environment.service,
            environment,
            environment.head_sha,
            branch=environment.branch,
            trigger_key=trigger_key,
            author=actor,
        )
    assert build is not None  # the trigger key is new
    session.flush()
    audit.record(
        session, actor, "environment.redeploy", "environment", environment.id, build=build.id
    )
    return build


def _approvable_head(environment: Environment, sha: str) -> str:
    """``sha`` if a person may approve it now: the PR's current head, and only that (the
    commit they reviewed is named, so a push between review and approval is refused)."""
    if environment.kind != "preview" or not environment.from_fork:
        raise Conflict("only previews of pull requests from forks wait for approval")
    if environment.status == "inactive":
        raise Conflict(f"preview {environment.name} is closed")
    head = environment.head_sha
    if not head:
        raise Conflict(f"preview {environment.name} has no head commit yet")
    if sha != head:
        raise Conflict(
            f"the pull request's head is now {head[:7]}, not {sha[:7]}: review that commit "
            "and approve it",
            details={"sha": [f"the current head is {head}"]},
        )
    return head


def approve(
    session: Session, environment_id: int, actor: str, sha: str
) -> tuple[Environment, Build | None]:
    """A person approved the fork commit ``sha`` they reviewed (it must be the head): build
    and run that commit, untrusted; the next push waits for a new approval."""
    environment = session.get(Environment, environment_id, with_for_update=True)
    if environment is None:
        raise NotFound(f"environment {environment_id} does not exist")
    head = _approvable_head(environment, sha)
    if environment.approved_sha != head:
        environment.approved_sha = head
        audit.record(session, actor, "environment.approve", "environment", environment.id, sha=head)
    build = advance_fork(session, environment)
    if build is not None:
        session.flush()
    return environment, build


def approve_secrets(session: Session, environment_id: int, actor: str, sha: str) -> Environment:
    """A person let the fork commit ``sha`` they reviewed (the head, and only it) receive
    secrets."""
    environment = session.get(Environment, environment_id, with_for_update=True)
    if environment is None:
        raise NotFound(f"environment {environment_id} does not exist")
    head = _approvable_head(environment, sha)
    if not environment.secrets_approved_for(head):
        environment.secrets_approved_sha = head
        environment.generation += 1
        generations.bump(session, environment.host_id)
        audit.record(
            session, actor, "environment.approve_secrets", "environment", environment.id, sha=head
        )
    return environment
