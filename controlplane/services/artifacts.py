"""A build's uploaded images and pinned compose file, checked before they are stored:
the control plane's authoritative word on what a build worker may hand a host."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from contracts.compose_policy import (
    MAX_LISTED,
    Caps,
    ComposeRefused,
    Violation,
    load_and_check,
    parse_memory,
)
from contracts.compose_routes import RouteChoiceError, routed_service
from contracts.image_names import (
    DIGEST_RE,
    TAG,
    image_repository,
    may_name_registry_image,
    pull_request_repository,
)
from contracts.statuses import StepStatus
from contracts.steps import Step
from contracts.yamlsafe import YamlRefused, load_yaml
from controlplane.errors import ComposeRefusedError, Conflict
from controlplane.models import Build
from controlplane.services import refusals
from controlplane.services.builds import FINISHED, finish_step, get_build

# How the status_reason of an environment refused for a build's artifacts starts.
REFUSED_ARTIFACTS = "artifacts of build "


def record_artifacts(
    session: Session,
    build_id: int,
    attempt: int,
    images: dict[str, Any],
    compose: str | None,
    *,
    registry: str,
    routed: str | None = None,
) -> Build:
    """Store the pushed images (by digest) and the pinned compose file of a build.

    The authoritative check of a worker's upload: the compose file must pass the policy
    (with the service's extra keys unless the build is a fork's) and every image must be
    a digest under the repository this build pushes to (``registry``). Anything else fails
    the build, puts its environment in status ``refused`` with the reasons, and raises
    ComposeRefusedError; the caller commits that record before answering. The routed
    service is the one the compose file names (:mod:`contracts.compose_routes`): a
    worker's ``routed`` that differs is refused too, and a worker that sent none is fine.
    """
    build = get_build(session, build_id, lock=True)
    if attempt != build.attempt or build.status in FINISHED:
        raise Conflict(f"build {build_id} attempt {attempt} is no longer current")
    derived, route_violations = _routed_service(compose, routed)
    violations = artifact_violations(build, images, compose, registry) + route_violations
    if violations:
        reasons = "; ".join(str(v) for v in violations[:MAX_LISTED])
        running = [step.name for step in build.steps if step.status == StepStatus.RUNNING]
        finish_step(
            session,
            build.id,
            running[0] if running else Step.UPLOAD_COMPOSE,
            attempt,
            succeeded=False,
            error=f"artifacts refused: {reasons}",
        )
        reason = f"{REFUSED_ARTIFACTS}{build.id} ({build.commit_sha[:7]}) refused: {reasons}"
        refusals.refuse(session, build.environment, reason, build=build.id)
        raise ComposeRefusedError(
            f"artifacts refused: {reasons}", details={"violations": [str(v) for v in violations]}
        )
    if (build.environment.status_reason or "").startswith(REFUSED_ARTIFACTS):
        build.environment.status_reason = None  # an earlier build's refusal is over
    build.images = images
    build.compose = compose
    build.routed_service = derived
    return build


def _routed_service(
    compose: str | None, claimed: str | None
) -> tuple[str | None, tuple[Violation, ...]]:
    """The routed service of a pinned compose file, and what is wrong with ``claimed``."""
    if compose is None:
        if claimed is None:
            return None, ()
        return None, (Violation("routed_service", "a build without compose routes no service"),)
    try:
        document = load_yaml(compose)
        derived = routed_service(document) if isinstance(document, dict) else None
    except YamlRefused:
        return None, ()  # the policy check names what is wrong with the file
    except RouteChoiceError as exc:
        return None, (Violation("routed_service", str(exc)),)
    if claimed is not None and claimed != derived:
        return derived, (
            Violation("routed_service", f"the compose file routes {derived!r}, not {claimed!r}"),
        )
    return derived, ()


def artifact_violations(
    build: Build, images: Mapping[str, Any], compose: str | None, registry: str
) -> tuple[Violation, ...]:
    """What is wrong with a build's uploaded images and pinned compose file (empty: fine).

    Images: one per service that was built (``app`` for a root Dockerfile), each a sha256
    digest in the repository the build worker pushes that service to: a fork's under its
    pull request's own name. Compose: the policy, no ``build:`` left for a host to run, and
    the built services running exactly the pushed digests.
    """
    service = build.service
    violations: list[Violation] = []
    services: Mapping[str, Any] = {}
    if compose is not None:
        allow = frozenset() if build.untrusted else frozenset(map(str, service.compose_allow))
        memory = parse_memory(service.memory_limit) if service.memory_limit else None
        caps = Caps(cpus=service.cpu_limit, memory_bytes=memory, pids=None)
        try:
            services = load_and_check(compose, extra_allowed=allow, caps=caps)["services"]
        except ComposeRefused as exc:
            violations.extend(exc.violations)
        for name, spec in services.items():
            if "build" in spec:
                violations.append(
                    Violation(f"services.{name}.build", "a pinned compose file builds nothing")
                )
    for key, image in images.items():
        if compose is None and key != "app":
            violations.append(Violation(f"images.{key}", "a build without compose has one app"))
        elif services and key not in services:
            violations.append(Violation(f"images.{key}", "no such service in the compose file"))
        else:
            violations.extend(
                _image_violations(
                    build, key, image, registry, from_compose=compose is not None, services=services
                )
            )
    if build.untrusted:
        # A fork's preview runs what it built and public images, never production's:
        # the registry under no spelling of its address, nor an image the host holds.
        for name, spec in services.items():
            reference = spec.get("image")
            if (
                name not in images
                and isinstance(reference, str)
                and may_name_registry_image(reference, registry)
            ):
                violations.append(
                    Violation(
                        f"services.{name}.image",
                        "an image of Portside's registry, or one the host holds",
                    )
                )
    return tuple(violations)


def _image_violations(
    build: Build,
    key: str,
    image: Any,
    registry: str,
    *,
    from_compose: bool,
    services: Mapping[str, Any],
) -> list[Violation]:
    """One uploaded image: its digest, its repository, and the compose service running it."""
    compose_service = key if from_compose else None
    owner_repo = build.service.repository_full_name
    try:
        if build.untrusted:
            pr_number = build.environment.pr_number or 0
            expected = pull_request_repository(registry, owner_repo, pr_number, compose_service)
        else:
            expected = image_repository(registry, owner_repo, compose_service)
    except ValueError as exc:
        return [Violation(f"images.{key}.repository", f"no repository can be named: {exc}")]
    repository = image.get("repository") if isinstance(image, Mapping) else None
    digest = image.get("digest") if isinstance(image, Mapping) else None
    violations = []
    if repository != expected:
        violations.append(
            Violation(f"images.{key}.repository", f"must be {expected}, got {repository!r}")
        )
    tag = image.get("tag") if isinstance(image, Mapping) else None
    if tag is not None and not (isinstance(tag, str) and TAG.fullmatch(tag)):
        violations.append(Violation(f"images.{key}.tag", "must be a Docker tag"))
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        violations.append(Violation(f"images.{key}.digest", "must be sha256: and 64 hex digits"))
    elif key in services and services[key].get("image") != f"{expected}@{digest}":
        violations.append(
            Violation(f"services.{key}.image", "must be the pushed image, pinned by its digest")
        )
    return violations
