"""The roster of App installations and their repositories, kept from webhook events.

Each repository notes whether it has a compose file at one of the default paths docker
compose looks at, found through the contents API at the default branch.
"""

from __future__ import annotations

import logging
from typing import Any

from github import Github
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.errors import NotFound, PermanentError
from controlplane.github.app import GitHubApp
from controlplane.models import Installation, Repository, WebhookDelivery, utcnow
from controlplane.services.outcomes import HandlerContext, Outcome

log = logging.getLogger(__name__)

# The file names `docker compose` looks for, in its order of preference.
COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


def _upsert_installation(session: Session, data: dict[str, Any]) -> Installation:
    account = data.get("account") or {}
    installation = session.get(Installation, data["id"])
    if installation is None:
        installation = Installation(id=data["id"], account_login="", account_type="User")
        session.add(installation)
    installation.account_login = account.get("login") or installation.account_login or "?"
    installation.account_type = account.get("type") or installation.account_type
    return installation


def _upsert_repository(
    session: Session, installation: Installation, data: dict[str, Any]
) -> Repository:
    repository = session.get(Repository, data["id"])
    if repository is None:
        repository = Repository(id=data["id"], installation_id=installation.id, full_name="")
        session.add(repository)
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
        listing = repo.get_contents("", ref=repo.default_branch)
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
        installation.deleted_at = utcnow()
        for repository in installation.repositories:
            repository.removed_at = repository.removed_at or utcnow()
        return Outcome("processed", f"installation {installation.id} deleted")
    if action == "suspend":
        installation.suspended_at = utcnow()
        return Outcome("processed", f"installation {installation.id} suspended")
    if action == "unsuspend":
        installation.suspended_at = None
        return Outcome("processed", f"installation {installation.id} unsuspended")
    if action not in ("created", "new_permissions_accepted"):
        return Outcome("ignored", f"installation action {action!r} is not handled")
    installation.deleted_at = None
    session.flush()
    repositories = [
        _upsert_repository(session, installation, repo)
        for repo in delivery.payload.get("repositories") or []
    ]
    session.flush()
    for repository in repositories:
        detect_compose(session, repository, github)
    return Outcome(
        "processed",
        f"installation {installation.id} {action} with {len(repositories)} repositories",
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
    for repository in added:
        detect_compose(session, repository, github)
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
