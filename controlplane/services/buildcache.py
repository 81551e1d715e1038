"""Which pushed images a build may take its layers from, so that a first build is warm.

A build worker reuses the layers of its branch's previous image; a new branch, or a
pull request's first preview build, has none. Its Dockerfile mostly matches production's,
though, so the build spec names the service's production image (what production runs now)
and the base branch's latest pushed image, by digest, per compose service: the worker
pulls them when it lacks them and hands them to the builder as ``cache_from``. A fork's
build (untrusted) gets none: production's layers are never offered to code nobody
reviewed, nor is a cache its build could poison.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.models import Build, Environment
from controlplane.services import images
from controlplane.statuses import BuildStatus


def cache_refs(session: Session, build: Build) -> dict[str, list[str]]:
    """Per image key (compose service, or ``app``): the ``repository@digest`` references
    to use as build cache, production's current image first; {} for a fork's build."""
    if build.untrusted:
        return {}
    production = session.scalar(
        select(Environment).where(
            Environment.service_id == build.service_id, Environment.kind == "production"
        )
    )
    if production is None:
        return {}
    sources: list[Build] = []
    if production.current_deployment is not None:
        sources.append(production.current_deployment.build)
    latest = session.scalar(
        select(Build)
        .where(
            Build.environment_id == production.id,
            Build.untrusted.is_(False),
            Build.id != build.id,
            Build.branch == production.branch,
            Build.status == BuildStatus.SUCCEEDED,
        )
        .order_by(Build.id.desc())
        .limit(1)
    )
    if latest is not None:
        sources.append(latest)
    refs: dict[str, list[str]] = {}
    for source in sources:
        if source.id == build.id or source.untrusted:
            continue
        for key, reference in images.pushed(source).items():
            if reference not in refs.get(key, []):
                refs.setdefault(key, []).append(reference)
    return refs
