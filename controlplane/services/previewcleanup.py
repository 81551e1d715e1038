"""The periodic preview clean-up: which previews to tear down (idle, over the limit, their
pull request closed unnoticed) and deleting torn-down previews' images from the registry."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from github import Github
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.errors import (
    PermanentError,
    TransientError,
)
from controlplane.github.app import GitHubApp
from controlplane.models import (
    Build,
    Environment,
    Service,
    utcnow,
)
from controlplane.services import listings, registries
from controlplane.statuses import EnvironmentStatus

log = logging.getLogger(__name__)


# How a torn-down preview's status_reason starts while the registry refuses its images.
IMAGES_REFUSED = "the registry refused to delete this preview's images"


def pushed_images(environment: Environment, builds: list[Build]) -> list[dict[str, Any]]:
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
    environment = listings.get_environment(session, environment_id)
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
            Environment.status == EnvironmentStatus.INACTIVE, Environment.images_pending.is_(True)
        )
    )
    return [
        pushed_images(
            environment,
            list(session.scalars(select(Build).where(Build.environment_id == environment.id))),
        )
        for environment in pending
    ]


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
                    Environment.status != EnvironmentStatus.INACTIVE,
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
        select(Environment).where(
            Environment.kind == "preview", Environment.status != EnvironmentStatus.INACTIVE
        )
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
