"""Pushes become builds: exactly one per environment and commit, never an older one late.

Both the ``push`` webhook and the backstop that polls branch heads
(:mod:`~controlplane.services.backstop`) go through :func:`start_build`, so whichever
comes first wins and the other finds the build there.
A service tracking tags (``track_tags``) is built from pushes of matching tags instead
of its branch, the latest pushed tag winning (:mod:`~controlplane.services.ancestry`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from typing import Any

from github import Github, GithubException
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts import envkinds
from contracts.steps import STEPS
from controlplane.errors import (
    Conflict,
    PermanentError,
    TemporarilyUnavailable,
    TransientError,
    ValidationFailed,
)
from controlplane.github.app import GitHubApp, GitHubRefused
from controlplane.models import (
    Build,
    BuildStep,
    Environment,
    Installation,
    Repository,
    Service,
    WebhookDelivery,
    utcnow,
)
from controlplane.services import ancestry, effects, watchpaths
from controlplane.services.outcomes import HandlerContext, Outcome
from controlplane.statuses import EnvironmentStatus

log = logging.getLogger(__name__)

ZERO_SHA = "0" * 40
# Pushes and the backstop share this key so they cannot both build the same commit.
AUTOMATIC = "auto"


def production_environment(session: Session, service: Service) -> Environment:
    environment = session.scalar(
        select(Environment).where(
            Environment.service_id == service.id, Environment.kind == "production"
        )
    )
    if environment is None:
        raise PermanentError(f"service {service.name} has no production environment")
    return environment


def start_build(
    session: Session,
    service: Service,
    environment: Environment,
    commit_sha: str,
    *,
    branch: str,
    trigger_key: str = AUTOMATIC,
    delivery_id: int | None = None,
    commit_message: str | None = None,
    author: str | None = None,
    pushed_at: dt.datetime | None = None,
    untrusted: bool = False,
    ref: str | None = None,
) -> Build | None:
    """Queue a build, in the caller's transaction, unless one exists for the same
    environment, commit and key; ``untrusted`` marks code from a fork (built without
    network, secrets or cache); ``ref`` the branch, tag or commit it was chosen by
    (ordered by time, not ancestry)."""
    existing = session.scalar(
        select(Build).where(
            Build.environment_id == environment.id,
            Build.commit_sha == commit_sha,
            Build.trigger_key == trigger_key,
        )
    )
    if existing is not None:
        return None
    build = Build(
        service_id=service.id,
        environment_id=environment.id,
        commit_sha=commit_sha,
        branch=branch,
        trigger_key=trigger_key,
        delivery_id=delivery_id,
        commit_message=commit_message,
        author=author,
        pushed_at=pushed_at,
        untrusted=untrusted,
        ref=ref,
        status="queued",
        steps=[
            BuildStep(name=step.value, position=position) for position, step in enumerate(STEPS)
        ],
    )
    try:
        with session.begin_nested():
            session.add(build)
    except IntegrityError:
        # A concurrent delivery of the same push won the race.
        return None
    environment.head_sha = commit_sha
    # Queued with its commit: the dispatcher (woken at the commit) sends it when its
    # turn comes; what it makes pointless is cancelled off this transaction.
    effects.note_feedback(session, "build_queued", build.id)
    effects.note_supersede(session, build.id)
    return build


def tracking_services(session: Session, repository_id: int, full_name: str) -> list[Service]:
    """Services of a repository, found by GitHub's id so a rename keeps them (a git-URL
    service's ``git/<name>`` is no GitHub repository's)."""
    services = list(
        session.scalars(
            select(Service).where(
                Service.deleted_at.is_(None),
                Service.git_url.is_(None),
                (Service.repository_id == repository_id)
                | (Service.repository_id.is_(None) & (Service.repository_full_name == full_name)),
            )
        )
    )
    for service in services:
        service.repository_id = repository_id
        service.repository_full_name = full_name
    return services


def _newer_build(
    session: Session, environment: Environment, pushed: ancestry.Pushed, payload: dict[str, Any]
) -> Build | None:
    """A build of the environment newer than this push (by :func:`ancestry.is_newer` from
    the push payloads, without asking GitHub: processing a delivery never waits on it),
    when this push's delivery arrived after that build's. A push the payloads cannot
    place is built, and its supersede task compares it on GitHub."""
    facts = ancestry.facts_for(session, environment.id, [payload])
    recent = session.scalars(
        select(Build)
        .where(Build.environment_id == environment.id)
        .order_by(Build.id.desc())
        .limit(ancestry.RECENT_BUILDS)
    )
    return next((b for b in recent if ancestry.is_newer(ancestry.of_build(b), pushed, facts)), None)


def github_compare(github: GitHubApp | None, service: Service) -> ancestry.Compare | None:
    """GitHub's compare API on the service's repository (``status`` of head against base),
    or None when GitHub cannot be asked (no App configured, repository not installed)."""
    repository = service.repository
    if github is None or repository is None or repository.installation_id is None:
        return None
    installation_id = repository.installation_id

    def compare(base: str, head: str) -> str:
        def status(client: Github) -> str:
            repo = client.get_repo(service.repository_full_name)
            return str(repo.compare(base, head).status)

        return github.call(installation_id, f"compare {base[:7]}...{head[:7]}", status)

    return compare


def resolve_ref(github: GitHubApp | None, service: Service, ref: str) -> tuple[str, str] | None:
    """The commit a branch, tag or (abbreviated) SHA names in the service's repository, as
    (SHA, message), through GitHub (``GET /repos/{o}/{r}/commits/{ref}``); None when GitHub
    knows no such ref. Conflict when GitHub may not be asked for this repository or
    refuses, TemporarilyUnavailable when it cannot be reached now (a person asks again)."""
    repository = service.repository
    if github is None or repository is None or repository.installation_id is None:
        raise Conflict(
            f"the Portside App is not installed on {service.repository_full_name}: "
            "refs cannot be resolved"
        )

    def commit_of(client: Github) -> tuple[str, str, bool] | None:
        repo = client.get_repo(service.repository_full_name)
        try:
            commit = repo.get_commit(ref)
        except GithubException as exc:
            if exc.status in (404, 422):  # GitHub answers either for a ref it does not know
                return None
            raise
        if not commit.sha.startswith(ref.lower()):
            return commit.sha, commit.commit.message, True  # a branch or tag of the repository
        try:  # a bare SHA: GitHub also resolves commits that only a fork holds
            status = repo.compare(commit.sha, service.branch).status
        except GithubException as exc:
            if exc.status in (404, 422):
                return commit.sha, commit.commit.message, False
            raise
        return commit.sha, commit.commit.message, status in ("ahead", "identical")

    try:
        found = github.call(repository.installation_id, f"resolve {ref!r}", commit_of)
    except GitHubRefused as exc:
        raise Conflict(str(exc)) from None
    except TransientError as exc:
        raise TemporarilyUnavailable(f"{exc}; try again") from None
    if found is None:
        return None
    sha, message, in_history = found
    if not in_history:
        raise ValidationFailed(
            f"commit {sha[:10]} is not in the history of {service.branch}: deploy it by the "
            "branch or tag that holds it (GitHub also resolves a bare SHA that only a fork has)",
            details={"ref": [f"a SHA must be on {service.branch}; name a branch or tag instead"]},
        )
    return sha, message


def tracks(service: Service, *, branch: str | None = None, tag: str | None = None) -> bool:
    """Whether a push of ``branch`` or of ``tag`` deploys the service's production: a
    service tracking tags takes matching tags only, any other its branch only."""
    if service.track_tags:
        return tag is not None and bool(watchpaths.glob_pattern(service.track_tags).match(tag))
    return branch is not None and branch == service.branch


def installation_refusal(session: Session, delivery: WebhookDelivery) -> str | None:
    """Why a delivery's installation cannot start anything, or None when it can."""
    if delivery.installation_id is None:
        return f"{delivery.event} without an installation: not from the Portside App"
    installation = session.get(Installation, delivery.installation_id)
    if installation is None:
        return f"installation {delivery.installation_id} is not known"
    if installation.deleted_at is not None:
        return f"installation {installation.id} is deleted"
    if installation.suspended_at is not None:
        return f"installation {installation.id} is suspended"
    return None


def repository_refusal(session: Session, delivery: WebhookDelivery) -> str | None:
    """Why a delivery's repository cannot start anything: the App must be installed on it
    (a service naming a repository is not enough), or None when it is."""
    repository = session.get(Repository, delivery.repository_id) if delivery.repository_id else None
    if (
        repository is None
        or repository.removed_at is not None
        or repository.installation_id != delivery.installation_id
    ):
        name = delivery.repository_full_name or delivery.repository_id
        return f"repository {name} is not installed for installation {delivery.installation_id}"
    return None


def deployed_by(
    session: Session, service: Service, *, branch: str | None = None, tag: str | None = None
) -> list[Environment]:
    """The environments of ``service`` a push of ``branch`` or ``tag`` builds and deploys:
    production when it :func:`tracks` the push, and the live environments other than
    production and previews (staging, :mod:`~controlplane.services.staging`) tracking
    that branch."""
    found = (
        [production_environment(session, service)]
        if tracks(service, branch=branch, tag=tag)
        else []
    )
    if branch is not None:
        found += session.scalars(
            select(Environment)
            .where(
                Environment.service_id == service.id,
                Environment.kind.not_in((envkinds.PRODUCTION, envkinds.PREVIEW)),
                Environment.status != EnvironmentStatus.INACTIVE,
                Environment.branch == branch,
            )
            .order_by(Environment.id)
        )
    return found


def handle_push(session: Session, delivery: WebhookDelivery, context: HandlerContext) -> Outcome:
    payload = delivery.payload
    ref = payload.get("ref") or ""
    refusal = installation_refusal(session, delivery)
    if refusal:
        return Outcome("ignored", refusal)
    tag = ref[len("refs/tags/") :] if ref.startswith("refs/tags/") else None
    if tag is None and not ref.startswith("refs/heads/"):
        return Outcome("ignored", f"push to {ref!r}, which is not a branch or a tag")
    branch = None if tag is not None else ref[len("refs/heads/") :]
    after = payload.get("after") or ""
    if payload.get("deleted") or after == ZERO_SHA:
        deleted = f"tag push {ref}: the tag" if tag is not None else f"branch {branch}"
        return Outcome("ignored", f"{deleted} was deleted")
    if not re.fullmatch(r"[0-9a-f]{40}", after):
        raise PermanentError(f"push has no valid 'after' commit: {after!r}")
    head = payload.get("head_commit") or {}
    # An annotated tag's push names the tag object in 'after', its commit in head_commit.
    commit = str(head.get("id") or after) if tag is not None else after
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise PermanentError(f"tag push has no valid head commit: {commit!r}")
    repository_data = payload.get("repository") or {}
    if delivery.repository_id is None:
        raise PermanentError("push without a repository")
    if refusal := repository_refusal(session, delivery):
        return Outcome("ignored", refusal)
    full_name = str(repository_data.get("full_name") or delivery.repository_full_name)
    repository = session.get(Repository, delivery.repository_id)
    if repository is not None:
        repository.full_name = full_name
        repository.clone_url = repository_data.get("clone_url") or repository.clone_url
    targets = [
        (service, environment)
        for service in tracking_services(session, delivery.repository_id, full_name)
        for environment in deployed_by(session, service, branch=branch, tag=tag)
    ]
    if not targets:
        if tag is not None:
            return Outcome("ignored", f"tag push {ref}: no service of {full_name} tracks it")
        return Outcome("ignored", f"no service tracks {full_name}@{branch}")
    paths = watchpaths.changed_paths(payload)
    raw_pushed_at = repository_data.get("pushed_at")
    pushed_at = (
        dt.datetime.fromtimestamp(raw_pushed_at, dt.UTC) if isinstance(raw_pushed_at, int) else None
    )
    # Not built yet: it arrived after every build; without pushed_at, it was pushed now.
    pushed = ancestry.Pushed(commit, pushed_at or utcnow(), math.inf, chosen=tag is not None)
    notes: list[str] = []
    started: list[int] = []
    for service, environment in targets:
        # Production by its service's name, as ever; a staging environment by its own.
        label = service.name if environment.kind == "production" else environment.name
        # A tag is a release as a whole: watch paths filter branch pushes only.
        if (
            tag is None
            and service.watch_paths
            and not watchpaths.matches_watch_paths(paths, service.watch_paths)
        ):
            notes.append(f"{label}: no changed file matches its watch paths")
            continue
        newer = _newer_build(session, environment, pushed, payload)
        if newer is not None:
            notes.append(f"{label}: a newer push ({newer.commit_sha[:7]}) is built")
            continue
        build = start_build(
            session,
            service,
            environment,
            commit,
            branch=tag if tag is not None else environment.branch,
            # One build per tag and commit (a long tag's key is cut: same commit anyway).
            trigger_key=AUTOMATIC if tag is None else f"tag:{tag}"[:64],
            delivery_id=delivery.id,
            commit_message=head.get("message"),
            author=(head.get("author") or {}).get("username")
            or (head.get("author") or {}).get("name"),
            pushed_at=pushed_at,
            ref=tag,
        )
        if build is None:
            notes.append(f"{label}: {commit[:7]} is already built")
        else:
            started.append(build.id)
            notes.append(f"{label}: build {build.id} of {commit[:7]}")
    return Outcome("processed" if started else "ignored", "; ".join(notes))
