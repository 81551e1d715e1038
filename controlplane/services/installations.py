"""The roster of App installations and their repositories.

Webhook events keep it current; on ``created``, ``unsuspend`` and
``new_permissions_accepted``, and daily (:func:`reconcile_all`), it is compared with
``GET /installation/repositories``, so a missed event is repaired. The installations
themselves are caught up from ``GET /app/installations`` (:func:`sync`, daily and by
``portside github sync``): one installed, suspended or deleted while Portside was down
is registered, marked or removed as its webhook would have done.

Each repository notes whether it has a compose file at one of the default paths docker
compose looks at, found through the contents API at the default branch. A repository
GitHub cannot show (empty, refused, rate-limited) is registered all the same, left
unchecked and looked at again by the next reconciliation: one repository never fails
its installation's roster.
"""

from __future__ import annotations

import logging
from typing import Any

from github import Github, GithubException
from github.PaginatedList import PaginatedList
from github.Repository import Repository as GitHubRepository
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.errors import NotFound, PermanentError, TransientError
from controlplane.github.app import AppInstallation, GitHubApp, GitHubRateLimited
from controlplane.models import Base, Installation, Repository, WebhookDelivery, utcnow
from controlplane.services.outcomes import HandlerContext, Outcome

log = logging.getLogger(__name__)

# The file names `docker compose` looks for, in its order of preference.
COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


def _insert_unless_present(session: Session, model: type[Base], **values: Any) -> None:
    """Insert a row keyed by GitHub's id unless it is there. A webhook, the roster sync of
    a control worker starting and the daily run may register the same installation or
    repository at once: the second insert waits for the first and then does nothing,
    where a plain INSERT would fail its whole transaction."""
    if session.get_bind().dialect.name == "postgresql":
        statement: Any = postgresql_insert(model)
    else:
        statement = sqlite_insert(model)
    session.execute(statement.values(**values).on_conflict_do_nothing(index_elements=["id"]))


def _upsert_installation(session: Session, data: dict[str, Any]) -> Installation:
    account = data.get("account") or {}
    installation = session.get(Installation, data["id"])
    if installation is None:
        _insert_unless_present(
            session, Installation, id=data["id"], account_login="", account_type="User"
        )
        installation = session.get_one(Installation, data["id"])
    installation.account_login = account.get("login") or installation.account_login or "?"
    installation.account_type = account.get("type") or installation.account_type
    return installation


def _upsert_repository(
    session: Session, installation: Installation, data: dict[str, Any]
) -> Repository:
    repository = session.get(Repository, data["id"])
    if repository is None:
        _insert_unless_present(
            session,
            Repository,
            id=data["id"],
            installation_id=installation.id,
            full_name=data["full_name"],
        )
        repository = session.get_one(Repository, data["id"])
    repository.installation_id = installation.id
    repository.full_name = data["full_name"]
    repository.private = bool(data.get("private", True))
    repository.removed_at = None
    return repository


def detect_compose(session: Session, repository: Repository, github: GitHubApp | None) -> None:
    """Fill in clone URL, default branch and compose path from the API."""
    if github is None:
        return

    def look(client: Github) -> tuple[str, str, str | None]:
        repo = client.get_repo(repository.full_name)
        try:
            listing = repo.get_contents("", ref=repo.default_branch)
        except GithubException as exc:
            if exc.status != 404:  # 404 "This repository is empty.": nothing to find
                raise
            listing = []
        names = {item.name for item in (listing if isinstance(listing, list) else [listing])}
        compose = next((name for name in COMPOSE_FILE_NAMES if name in names), None)
        return repo.clone_url, repo.default_branch, compose

    clone_url, default_branch, compose = github.call(
        repository.installation_id, f"contents of {repository.full_name}", look
    )
    repository.clone_url = clone_url
    repository.default_branch = default_branch
    repository.compose_path = compose
    repository.compose_checked_at = utcnow()


def detect_each(session: Session, repositories: list[Repository], github: GitHubApp | None) -> None:
    """Look for the compose file of each repository; one GitHub cannot show stays
    unchecked (``compose_checked_at`` empty) for the next reconciliation. A rate limit
    stops the round: the rest wait for the next one too."""
    for repository in repositories:
        try:
            detect_compose(session, repository, github)
        except GitHubRateLimited as exc:
            log.warning("compose detection paused: %s; the next reconciliation goes on", exc)
            break
        except (PermanentError, TransientError) as exc:
            log.warning("%s stays unchecked: %s", repository.full_name, exc)


def _listed_repositories(github: GitHubApp, installation_id: int) -> list[dict[str, Any]]:
    """Every repository the installation can reach, all pages of
    ``GET /installation/repositories``."""

    def listing(client: Github) -> list[dict[str, Any]]:
        pages = PaginatedList(
            GitHubRepository,
            client.requester,
            "/installation/repositories",
            None,
            list_item="repositories",
        )
        return [{"id": r.id, "full_name": r.full_name, "private": r.private} for r in pages]

    return github.call(installation_id, f"repositories of installation {installation_id}", listing)


def reconcile(
    session: Session,
    installation: Installation,
    github: GitHubApp | None,
    known: list[dict[str, Any]] | None = None,
) -> tuple[int, int]:
    """Make the installation's roster what GitHub lists (``known``, a webhook's list,
    when no App client is configured): new repositories registered, the ones no longer
    listed marked removed, unchecked ones looked at. Returns (listed, removed)."""
    listed = _listed_repositories(github, installation.id) if github else list(known or [])
    present = [_upsert_repository(session, installation, data) for data in listed]
    session.flush()
    removed = 0
    if github is not None:
        ids = {repository.id for repository in present}
        for repository in installation.repositories:
            if repository.id not in ids and repository.removed_at is None:
                repository.removed_at = utcnow()
                removed += 1
    detect_each(session, [r for r in present if r.compose_checked_at is None], github)
    return len(present), removed


def reconcile_all(database: Database, github: GitHubApp) -> dict[int, str]:
    """The daily reconciliation of every live installation, each in its own transaction
    so one failing never holds back the others. Returns what happened, by installation."""
    with database.session_scope() as session:
        ids = list(
            session.scalars(
                select(Installation.id).where(
                    Installation.deleted_at.is_(None), Installation.suspended_at.is_(None)
                )
            )
        )
    results: dict[int, str] = {}
    for installation_id in ids:
        try:
            with database.session_scope() as session:
                installation = session.get(Installation, installation_id)
                if installation is None:
                    continue
                listed, removed = reconcile(session, installation, github)
            results[installation_id] = f"{listed} repositories, {removed} removed"
        except (PermanentError, TransientError) as exc:
            log.warning("installation %s not reconciled: %s", installation_id, exc)
            results[installation_id] = f"failed: {exc}"
    return results


def _mark_deleted(installation: Installation) -> None:
    """What the ``installation deleted`` event does: the installation and its roster gone."""
    installation.deleted_at = utcnow()
    for repository in installation.repositories:
        repository.removed_at = repository.removed_at or utcnow()


def _catch_up(session: Session, listed: list[AppInstallation]) -> dict[int, str]:
    """Bring the installations themselves in line with GitHub's list: the missing
    registered, suspensions followed, the unlisted deleted. Returns the changes by id."""
    changes: dict[int, list[str]] = {}
    for item in listed:
        known = session.get(Installation, item.id)
        account = {"login": item.account_login, "type": item.account_type}
        installation = _upsert_installation(session, {"id": item.id, "account": account})
        done = changes.setdefault(item.id, [])
        if known is None:
            done.append("added")
        elif installation.deleted_at is not None:
            done.append("restored")
        installation.deleted_at = None
        if item.suspended and installation.suspended_at is None:
            installation.suspended_at = utcnow()
            done.append("suspended")
        elif not item.suspended and installation.suspended_at is not None:
            installation.suspended_at = None
            done.append("unsuspended")
    session.flush()
    live = select(Installation).where(Installation.deleted_at.is_(None))
    for installation in session.scalars(live):
        if installation.id not in changes:
            _mark_deleted(installation)
            changes[installation.id] = ["deleted"]
    return {installation_id: ", ".join(done) for installation_id, done in changes.items()}


def sync(database: Database, github: GitHubApp) -> dict[int, str]:
    """Catch up what installation webhooks missed, from ``GET /app/installations``, then
    reconcile every live roster (:func:`reconcile_all`). Returns one line of what
    happened, by installation; GitHub unreachable for the list raises and changes nothing."""
    listed = github.installations()
    with database.session_scope() as session:
        changes = _catch_up(session, listed)
    rosters = reconcile_all(database, github)
    return {
        installation_id: ", ".join(
            part for part in (changes.get(installation_id), rosters.get(installation_id)) if part
        )
        or "unchanged"
        for installation_id in sorted(changes.keys() | rosters.keys())
    }


def _payload_installation(delivery: WebhookDelivery) -> dict[str, Any]:
    data = delivery.payload.get("installation")
    if not isinstance(data, dict) or not isinstance(data.get("id"), int):
        raise PermanentError("the payload has no installation")
    return data


def handle_installation_event(
    session: Session, delivery: WebhookDelivery, context: HandlerContext
) -> Outcome:
    github = context.github
    data = _payload_installation(delivery)
    action = delivery.action
    installation = _upsert_installation(session, data)
    if action == "deleted":
        _mark_deleted(installation)
        return Outcome("processed", f"installation {installation.id} deleted")
    if action == "suspend":
        installation.suspended_at = utcnow()
        return Outcome("processed", f"installation {installation.id} suspended")
    if action not in ("created", "new_permissions_accepted", "unsuspend"):
        return Outcome("ignored", f"installation action {action!r} is not handled")
    installation.deleted_at = None
    if action == "unsuspend":
        installation.suspended_at = None
    session.flush()
    listed, removed = reconcile(session, installation, github, delivery.payload.get("repositories"))
    return Outcome(
        "processed",
        f"installation {installation.id} {action} with {listed} repositories"
        + (f", {removed} removed" if removed else ""),
    )


def handle_repositories_event(
    session: Session, delivery: WebhookDelivery, context: HandlerContext
) -> Outcome:
    github = context.github
    installation = _upsert_installation(session, _payload_installation(delivery))
    session.flush()
    added = [
        _upsert_repository(session, installation, repo)
        for repo in delivery.payload.get("repositories_added") or []
    ]
    session.flush()
    detect_each(session, added, github)
    removed = 0
    for repo in delivery.payload.get("repositories_removed") or []:
        gone = session.get(Repository, repo["id"])
        if gone is not None and gone.removed_at is None:
            gone.removed_at = utcnow()
            removed += 1
    return Outcome("processed", f"{len(added)} repositories added, {removed} removed")


def list_installations(session: Session) -> list[Installation]:
    return list(session.scalars(select(Installation).order_by(Installation.id)))


def list_repositories(session: Session, installation_id: int) -> list[Repository]:
    if session.get(Installation, installation_id) is None:
        raise NotFound(f"installation {installation_id} does not exist")
    return list(
        session.scalars(
            select(Repository)
            .where(Repository.installation_id == installation_id, Repository.removed_at.is_(None))
            .order_by(Repository.full_name)
        )
    )
