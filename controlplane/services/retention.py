"""The registry keeps the last K production images of each service and no more.

Every push of production adds an image to the registry; nothing else ever deletes one.
A periodic control task (``portside.prune_registry``) deletes, by digest, the images of
each service's production builds older than its newest ``PORTSIDE_REGISTRY_KEEP``. Never
deleted, whatever its age: a digest that any environment (of any service: one repository's
services share its registry repository) runs now or ran in one of its last K deployments
(a rollback target), that a build not finished yet pushed (one held at a gate deploys it
later), or that a kept build of any service pushed. A build whose images are all gone is marked
(``images_deleted_at``) and not looked at again; a refusal is logged and tried again at
the next pass. Deleting a manifest frees no disk by itself: the registry's garbage
collection does (``registry garbage-collect``, docs/operations.rst).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.models import Build, Deployment, Environment, Service, utcnow
from controlplane.services import images, registries
from controlplane.services.builds import FINISHED

log = logging.getLogger(__name__)


@dataclass
class Pruned:
    """What one pass deleted, kept back and was refused, across every service."""

    deleted: list[str] = field(default_factory=list)
    protected: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


CredentialsFor = Callable[[str, int | None], registries.Credentials]


def prune_registry(session: Session, keep: int, credentials_for: CredentialsFor) -> Pruned:
    """Delete every service's production images older than its newest ``keep`` builds
    (see the module). Unreachable registries raise TransientError, for the task's retry."""
    pruned = Pruned()
    # Digests are protected across services: the registry's repository is per GitHub
    # repository, so two services of one repository can push the very same image.
    protected = _digests(_in_use(session, keep))
    candidates: list[tuple[Service, list[Build]]] = []
    for service in session.scalars(select(Service)):
        kept, older = _production_builds(session, service, keep)
        protected |= _digests(kept)
        if service.deleted_at is None and older:
            candidates.append((service, older))
    for service, older in candidates:
        _delete(service, older, protected, credentials_for, pruned)
    for what, references in (("deleted", pruned.deleted), ("refused", pruned.refused)):
        if references:
            log.info("registry retention %s %d images: %s", what, len(references), references)
    return pruned


def _production_builds(
    session: Session, service: Service, keep: int
) -> tuple[list[Build], list[Build]]:
    """The service's newest ``keep`` finished production builds that pushed images, and
    the older ones whose images are still to delete."""
    pushed = [
        build
        for build in session.scalars(
            select(Build)
            .join(Environment, Build.environment_id == Environment.id)
            .where(
                Build.service_id == service.id,
                Environment.kind == "production",
                Build.untrusted.is_(False),
                Build.status.in_(FINISHED),  # they will push no more
            )
            .order_by(Build.id.desc())
        )
        if _pushed(build)
    ]
    return pushed[:keep], [b for b in pushed[keep:] if b.images_deleted_at is None]


def _delete(
    service: Service,
    older: list[Build],
    protected: set[str],
    credentials_for: CredentialsFor,
    pruned: Pruned,
) -> None:
    installation_id = service.repository.installation_id if service.repository else None
    for build in older:
        remaining = 0
        for repository, digest in _pushed(build):
            reference = f"{repository}@{digest}"
            if digest in protected:
                pruned.protected.append(reference)
                remaining += 1
                continue
            try:
                registries.delete_image(
                    credentials_for(repository, installation_id), repository, digest
                )
            except registries.RegistryRefused as exc:
                log.warning("registry retention: %s", exc)
                pruned.refused.append(reference)
                remaining += 1
                continue
            pruned.deleted.append(reference)
        if not remaining:
            build.images_deleted_at = utcnow()


def _in_use(session: Session, keep: int) -> list[Build]:
    """The builds any environment runs now or ran in one of its last ``keep``
    deployments, and those not finished (running, or held at a gate to deploy)."""
    builds = list(session.scalars(select(Build).where(Build.status.not_in(FINISHED))))
    for environment in session.scalars(select(Environment)):
        if environment.current_deployment is not None:
            builds.append(environment.current_deployment.build)
        builds.extend(
            session.scalars(
                select(Build)
                .join(Deployment, Deployment.build_id == Build.id)
                .where(Deployment.environment_id == environment.id)
                .order_by(Deployment.id.desc())
                .limit(keep)
            )
        )
    return builds


def _pushed(build: Build) -> list[tuple[str, str]]:
    """(repository, digest) of each image the build pushed."""
    return [
        (repository, digest)
        for repository, _at, digest in (
            ref.rpartition("@") for ref in images.pushed(build).values()
        )
    ]


def _digests(builds: Iterable[Build]) -> set[str]:
    return {digest for build in builds for _repository, digest in _pushed(build)}
