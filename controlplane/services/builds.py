"""The control plane's half of the pipeline: build workers claim steps, report them, and
record artifacts and deployments through the API; everything here is idempotent.

A step is keyed by (build, attempt, step): a redelivered message of a finished step, or
of an attempt that was taken over after its worker died, is refused with a Conflict and
the worker drops it.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis import Redis
from sqlalchemy import func, select, text, update
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
from contracts.steps import LAST_STEP, STEPS, Step
from contracts.yamlsafe import YamlRefused, load_yaml
from controlplane.errors import (
    ComposeRefusedError,
    Conflict,
    NotFound,
    NotPermitted,
    ValidationFailed,
)
from controlplane.models import (
    ApiToken,
    Build,
    BuildStep,
    Deployment,
    Environment,
    Service,
    utcnow,
)
from controlplane.services import (
    ancestry,
    audit,
    buildcache,
    effects,
    gates,
    generations,
    refusals,
    stops,
)

log = logging.getLogger(__name__)

FINISHED = ("succeeded", "failed", "cancelled", "superseded")


@dataclass(frozen=True, slots=True)
class BuildSpec:
    """Everything a build worker needs for one step, and nothing it must not carry."""

    build_id: int
    attempt: int
    step: str
    service_id: int
    service: str
    environment: str
    repository: str
    installation_id: int | None
    clone_url: str | None
    # Cloned from a git URL, with its own credentials (POST .../git-token), not GitHub's.
    git_remote: bool
    commit_sha: str
    branch: str
    compose_path: str | None
    compose_allow: list[str]
    images: dict[str, Any] = field(default_factory=dict)
    # A fork's code: no network, cache or branch tag, images under pr_number's own name.
    untrusted: bool = False
    pr_number: int | None = None
    # Per image key, pushed images to take layers from (services.buildcache); none for forks.
    cache_from: dict[str, list[str]] = field(default_factory=dict)


def get_build(session: Session, build_id: int, *, lock: bool = False) -> Build:
    build = session.get(Build, build_id, with_for_update=lock)
    if build is None:
        raise NotFound(f"build {build_id} does not exist")
    return build


def _step(build: Build, name: str) -> BuildStep:
    for step in build.steps:
        if step.name == name:
            return step
    raise NotFound(f"build {build.id} has no step {name!r}")


# A step whose worker sent a heartbeat this recently is still being worked on.
STEP_ALIVE = dt.timedelta(seconds=45)


def claim_step(
    session: Session,
    build_id: int,
    step_name: str,
    attempt: int,
    worker: str,
    *,
    token: ApiToken | None = None,
) -> BuildSpec:
    """Mark a step running for ``worker``, held by the API token ``token`` (the only one
    then answered this build's credentials); NotPermitted when the build is not of the
    token's lane, Conflict when the step must not run (again)."""
    build = get_build(session, build_id, lock=True)
    if token is not None and token.build_lane not in ("all", _lane(build)):
        raise NotPermitted(
            f"this token claims {token.build_lane} builds only; build {build_id} is {_lane(build)}"
        )
    if build.status in FINISHED:
        raise Conflict(f"build {build_id} is {build.status}")
    if attempt != build.attempt:
        raise Conflict(
            f"build {build_id} attempt {attempt} was taken over by attempt {build.attempt}"
        )
    step = _step(build, step_name)
    if step.status == "succeeded":
        raise Conflict(f"step {step_name} of build {build_id} already succeeded")
    alive = build.heartbeat_at is not None and utcnow() - build.heartbeat_at < STEP_ALIVE
    token_id = token.id if token is not None else None
    holder = (build.worker, build.worker_token_id)
    if step.status == "running" and alive and holder != (worker, token_id):
        # A redelivered message while the first worker is still at it: never run twice.
        # The worker's name is its own word; the token decides who holds the step.
        raise Conflict(f"step {step_name} of build {build_id} is running on {build.worker}")
    earlier = [s for s in build.steps if s.position < step.position and s.status != "succeeded"]
    if earlier:
        raise Conflict(f"step {step_name} of build {build_id} cannot run before {earlier[0].name}")
    now = utcnow()
    if build.status == "queued":
        build.status = "running"
        build.started_at = now
        build.environment.status = "building"
        wake_dispatchers(session)  # its place in the shared queue is free again
    effects.note_feedback(session, "build_running", build.id)  # the Check Run names the step
    build.worker = worker
    build.worker_token_id = token_id
    build.heartbeat_at = now
    step.status = "running"
    step.attempts += 1
    step.started_at = now
    step.error = None
    service = build.service
    repository = service.repository
    return BuildSpec(
        build_id=build.id,
        attempt=build.attempt,
        step=step_name,
        service_id=service.id,
        service=service.name,
        environment=build.environment.name,
        repository=service.repository_full_name,
        installation_id=repository.installation_id if repository else None,
        clone_url=service.git_url or (repository.clone_url if repository else None),
        git_remote=service.git_url is not None,
        commit_sha=build.commit_sha,
        branch=build.branch,
        compose_path=service.compose_path or (repository.compose_path if repository else None),
        compose_allow=[] if build.untrusted else [str(key) for key in service.compose_allow],
        images=dict(build.images or {}),
        untrusted=build.untrusted,
        pr_number=build.environment.pr_number,
        cache_from=buildcache.cache_refs(session, build) if step_name == "build" else {},
    )


def _lane(build: Build) -> str:
    return "untrusted" if build.untrusted else "trusted"


def held_build(session: Session, build_id: int, token_id: int) -> Build:
    """The build whose running step the token ``token_id`` claimed; NotPermitted otherwise, so
    a worker token reaches the credentials of the builds it works on and no others."""
    build = get_build(session, build_id)
    holding = (
        build.status == "running"
        and build.worker_token_id == token_id
        and any(step.status == "running" for step in build.steps)
    )
    if not holding:
        raise NotPermitted(f"this token does not hold a running step of build {build_id}")
    return build


def check_holder(session: Session, build_id: int, attempt: int, token_id: int | None) -> None:
    """NotPermitted unless ``token_id`` claimed the build's current ``attempt``: another worker
    token (one running forks' code among them) may neither report its steps, failing it,
    nor keep it alive. An attempt no longer current is the callee's Conflict."""
    build = get_build(session, build_id)
    if build.attempt == attempt and build.worker_token_id != token_id:
        raise NotPermitted(f"this token does not hold build {build_id}")


def finish_step(
    session: Session,
    build_id: int,
    step_name: str,
    attempt: int,
    *,
    succeeded: bool,
    error: str | None = None,
) -> Build:
    """Record a step's end; a failed step fails the build with an error a person can act on."""
    build = get_build(session, build_id, lock=True)
    if attempt != build.attempt:
        raise Conflict(f"build {build_id} attempt {attempt} is no longer current")
    step = _step(build, step_name)
    if succeeded and step.status == "succeeded":
        return build  # a repeated report (recording the deployment finishes its own step)
    if build.status in FINISHED:
        raise Conflict(f"build {build_id} is {build.status}")
    now = utcnow()
    step.finished_at = now
    build.heartbeat_at = now
    if succeeded:
        step.status = "succeeded"
        return build
    step.status = "failed"
    step.error = (error or "failed")[:4000]
    build.status = "failed"
    build.failed_step = step_name
    build.error = step.error
    build.finished_at = now
    build.environment.status = "failed"
    effects.note_feedback(session, "build_failed", build.id)
    for later in build.steps:
        if later.status == "pending":
            later.status = "skipped"
    return build


@dataclass(frozen=True, slots=True)
class StepEnded:
    """A reported step: the build, the deployment its last step made (None: held at a gate,
    or another step), and the next step when the worker claimed it in the same exchange."""

    build: Build
    deployment: Deployment | None = None
    next: BuildSpec | None = None


def end_step(
    session: Session,
    build_id: int,
    step_name: str,
    attempt: int,
    *,
    token: ApiToken,
    succeeded: bool,
    error: str | None = None,
    worker: str | None = None,
    artifacts: Mapping[str, Any] | None = None,
    registry: str,
    actor: str,
) -> StepEnded:
    """One step boundary, one exchange: record the step's own result (upload_compose's
    ``artifacts``; record_deployment deploys the build), end it, and claim the next step
    for ``worker`` when it names itself. ComposeRefusedError as :func:`record_artifacts`."""
    check_holder(session, build_id, attempt, token.id)
    deployment = None
    if succeeded and step_name == Step.UPLOAD_COMPOSE and artifacts is not None:
        record_artifacts(
            session,
            build_id,
            attempt,
            artifacts["images"],
            artifacts["compose"],
            registry=registry,
            routed=artifacts["routed_service"],
        )
    if succeeded and step_name == LAST_STEP:
        deployment = _deploy_step(session, build_id, attempt, actor)
    build = finish_step(session, build_id, step_name, attempt, succeeded=succeeded, error=error)
    following = next((step.next for step in STEPS if step == step_name), None)
    if worker is None or following is None or build.status != "running":
        return StepEnded(build, deployment)
    return StepEnded(
        build, deployment, claim_step(session, build_id, following, attempt, worker, token=token)
    )


def _deploy_step(session: Session, build_id: int, attempt: int, actor: str) -> Deployment | None:
    """The last step's own work: deploy the build, or hold it at a gate (None). A build no
    longer running was deployed or held by an earlier report (an older worker records
    the deployment before it finishes the step)."""
    build = get_build(session, build_id, lock=True)
    if attempt != build.attempt:
        raise Conflict(f"build {build_id} attempt {attempt} is no longer current")
    if build.status != "running":
        return None
    return record_deployment(session, build.service_id, build_id, actor)


def heartbeat(session: Session, build_id: int, attempt: int) -> None:
    """Note that the worker is at it; Conflict when it must stop: the build was cancelled
    (superseded) or this attempt taken over (the worker's backstop for a stop signal)."""
    beat = session.execute(
        update(Build)
        .where(Build.id == build_id, Build.attempt == attempt, Build.status == "running")
        .values(heartbeat_at=utcnow())
    )
    if beat.rowcount == 1:  # type: ignore[attr-defined]
        return
    build = get_build(session, build_id)
    if build.status == "cancelled":
        raise Conflict(f"build {build_id} was cancelled: {build.error}")
    if build.attempt != attempt:
        raise Conflict(f"build {build_id} attempt {attempt} was taken over")


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
        running = [step.name for step in build.steps if step.status == "running"]
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


def record_deployment(
    session: Session, service_id: int, build_id: int, actor: str
) -> Deployment | None:
    """Make a finished build the desired state of its environment, unless a newer one is
    or a gate holds it (then None: see :func:`deliver`)."""
    build = get_build(session, build_id, lock=True)
    if build.service_id != service_id:
        raise ValidationFailed(
            f"build {build_id} is not a build of service {service_id}",
            details={"build_id": ["belongs to another service"]},
        )
    if not build.images:
        raise Conflict(f"build {build_id} has no pushed images to deploy")
    if build.status in ("failed", "cancelled"):
        raise Conflict(f"build {build_id} is {build.status}")
    environment = session.get(Environment, build.environment_id, with_for_update=True)
    assert environment is not None
    return deliver(session, environment, build, actor)


def deliver(
    session: Session,
    environment: Environment,
    build: Build,
    actor: str,
    *,
    cleared: Collection[str] = (),
    promoted_from: Environment | None = None,
) -> Deployment | None:
    """Deploy ``build`` to ``environment`` (locked by the caller), or hold it at the first
    gate it has not ``cleared`` (:mod:`~controlplane.services.gates`) and return None. The
    one path from a build to a deployment: a push's, a released gate's, a promotion's.

    A build of another environment is a promotion (:mod:`~controlplane.services.promotion`,
    from ``promoted_from``, else the build's environment): recorded on the deployment,
    never superseded by what the environment runs (a person chose it just now; later
    pushes are ordered after it, see :func:`ancestry.of_deployment`), and made current
    again when that environment ran it before (a deployment row per environment and build).

    The environment's generation is compared-and-swapped, so builds that finish in any
    order end with the newest commit deployed: newest by ancestry as the push payloads
    tell it (:mod:`~controlplane.services.ancestry`; GitHub was asked already when the
    build started, see :func:`supersede_older`); a build held for the environment meanwhile
    counts as deployed.
    """
    existing = session.scalar(
        select(Deployment).where(
            Deployment.environment_id == environment.id, Deployment.build_id == build.id
        )
    )
    own = build.environment_id == environment.id
    source = promoted_from or (None if own else build.environment)
    if existing is not None and source is None:
        gates.release_hold(environment, build)
        _finish_build(build, "succeeded")
        return existing
    current = environment.current_deployment
    held = environment.held_build if environment.held_build_id != build.id else None
    facts = ancestry.facts_for(session, environment.id)
    rivals = [(held, ancestry.of_build(held))] if held is not None else []
    if current is not None:
        rivals.append((current.build, ancestry.of_deployment(current)))
    this = ancestry.of_build(build)
    newer = (
        None  # a promotion is a person's choice made now: nothing there is newer
        if source is not None
        else next((rival for rival, at in rivals if ancestry.is_newer(at, this, facts)), None)
    )
    if newer is not None:
        deployment = Deployment(environment_id=environment.id, build_id=build.id)
        session.add(deployment)
        deployment.status = "superseded"
        deployment.error = f"a newer build ({newer.commit_sha[:7]}) is already deployed"
        gates.release_hold(environment, build)
        _finish_build(build, "superseded")
        build.error = deployment.error
        effects.note_feedback(session, "build_cancelled", build.id)
        session.flush()
        return deployment
    if held is not None:  # an older build waits at a gate: this one goes instead
        if held.environment_id == environment.id and held.status in gates.HELD:
            _cancel(session, held, f"superseded by build {build.id} of {build.commit_sha[:7]}")
        environment.held_build_id = None
    gate = gates.first_gate(environment, build, cleared)
    if gate is not None:
        gates.hold(session, environment, build, gate)
        session.flush()
        return None
    deployment = existing or Deployment(environment_id=environment.id, build_id=build.id)
    deployment.status = "pending"
    if source is not None:
        deployment.promoted_from_id = source.id
        deployment.promoted_by = actor
        deployment.promoted_at = utcnow()
    session.add(deployment)
    seen = environment.generation
    session.flush()
    swapped = session.execute(
        update(Environment)
        .where(Environment.id == environment.id, Environment.generation == seen)
        .values(
            current_deployment_id=deployment.id,
            generation=seen + 1,
            status="deploying",
            status_reason=None,
            held_build_id=None,
        )
    )
    if swapped.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"environment {environment.name} changed meanwhile; retry")
    generations.bump_environment(session, environment)
    _finish_build(build, "succeeded")
    audit.record(
        session,
        actor,
        "deployment.create",
        "deployment",
        deployment.id,
        environment=environment.name,
        build=build.id,
        commit=build.commit_sha,
        promoted_from=source.name if source is not None else None,
    )
    session.flush()
    if source is not None:  # on GitHub, a deployment of its own (builds report theirs)
        effects.note_feedback(session, "deployment_promoted", deployment.id)
    return deployment


def _finish_build(build: Build, status: str) -> None:
    """End a build whose last step (recording the deployment) just happened."""
    if build.status in FINISHED:
        return
    now = utcnow()
    build.status = status
    build.finished_at = now
    last = _step(build, LAST_STEP)
    last.status = "succeeded"
    last.finished_at = now


def supersede_older(
    session: Session, build: Build, compare: ancestry.Compare | None = None
) -> list[int]:
    """Cancel what ``build`` makes pointless: the unfinished builds of the environment
    whose commit it is newer than, or ``build`` itself when an unfinished build or the
    deployed one is newer (its commit an ancestor of theirs). Newer by
    :func:`ancestry.is_newer`, asking GitHub through ``compare`` when the push payloads
    cannot tell. Return the cancelled builds' ids; the workers running them are told to
    stop once this transaction commits (:mod:`~controlplane.services.stops`).

    GitHub is asked before any row is locked; the builds are then locked in id order
    (as every caller locks them) and only those still unfinished are cancelled.
    """
    if build.status not in ("queued", "running"):
        return []  # cancelled meanwhile by a newer build's own start
    unfinished = (Build.status.in_(("queued", "running", *gates.HELD)),)
    rivals = [
        (rival, ancestry.of_build(rival))
        for rival in session.scalars(
            select(Build).where(
                Build.environment_id == build.environment_id, Build.id != build.id, *unfinished
            )
        )
    ]
    current = build.environment.current_deployment
    if current is not None and current.build_id != build.id:
        rivals.append((current.build, ancestry.of_deployment(current)))  # maybe a promotion
    facts = ancestry.facts_for(session, build.environment_id)
    this = ancestry.of_build(build)
    newer = next(
        (r for r, at in rivals if not ancestry.is_newer(this, at, facts, compare)),
        None,
    )
    doomed = {build.id: newer} if newer is not None else {r.id: build for r, _ in rivals}
    locked = session.scalars(
        select(Build)
        .where(Build.id.in_(doomed), *unfinished)
        .order_by(Build.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    for loser in locked:
        winner = doomed[loser.id]
        _cancel(session, loser, f"superseded by build {winner.id} of {winner.commit_sha[:7]}")
    return [loser.id for loser in locked]


def _cancel(session: Session, build: Build, reason: str) -> None:
    """Cancel an unfinished build; a worker running it is told to stop after the commit."""
    if build.status == "running":
        stops.note_stop(session, build.id, build.attempt, reason)
    gates.release_hold(build.environment, build)
    build.status = "cancelled"
    build.error = reason
    build.finished_at = utcnow()
    effects.note_feedback(session, "build_cancelled", build.id)
    for step in build.steps:
        if step.status in ("pending", "running"):
            step.status = "skipped" if step.status == "pending" else "failed"


def stale_builds(session: Session, older_than: dt.timedelta) -> list[Build]:
    """Running builds whose worker stopped sending heartbeats (killed, lost)."""
    cutoff = utcnow() - older_than
    return list(
        session.scalars(select(Build).where(Build.status == "running", Build.heartbeat_at < cutoff))
    )


def take_over(session: Session, build: Build) -> Build:
    """Queue a build again from its first step as a new attempt (old messages are void);
    the dispatchers send it when its turn comes.

    The step whose worker was lost is kept in ``failed_step`` (and why in ``error``): when
    the next attempt loses its worker in that same step too, the step is what kills its
    workers (a crafted input, a build too large for them), so the build fails instead of
    being taken over again and again.
    """
    lost = next((s for s in build.steps if s.status == "running"), None) or next(
        (s for s in build.steps if s.status != "succeeded"), None
    )
    lost_name = lost.name if lost is not None else None
    if lost_name is not None and build.attempt > 1 and build.failed_step == lost_name:
        _fail_lost_twice(session, build, lost_name)
        return build
    build.failed_step = lost_name
    build.error = (
        f"attempt {build.attempt} lost its worker {build.worker or '(unknown)'} "
        f"during step {lost_name}; taken over"
    )
    build.attempt += 1
    build.status = "queued"
    build.worker = None
    build.worker_token_id = None
    build.images = {}
    build.compose = None
    for step in build.steps:
        step.status = "pending"
        step.error = None
    wake_dispatchers(session)
    return build


def _fail_lost_twice(session: Session, build: Build, step_name: str) -> None:
    now = utcnow()
    error = (
        f"step {step_name} lost its worker in attempts {build.attempt - 1} and {build.attempt}: "
        "the build fails rather than being taken over again"
    )
    log.warning("build %s: %s", build.id, error)
    build.status = "failed"
    build.error = error
    build.failed_step = step_name
    build.finished_at = now
    build.worker_token_id = None
    build.environment.status = "failed"
    for step in build.steps:
        if step.name == step_name:
            step.status, step.error, step.finished_at = "failed", error, now
        elif step.status in ("pending", "running"):
            step.status = "skipped"
    effects.note_feedback(session, "build_failed", build.id)


def deployments_of(session: Session, service_id: int) -> list[Deployment]:
    service = session.get(Service, service_id)
    if service is None or service.deleted_at is not None:
        raise NotFound(f"service {service_id} does not exist")
    return list(
        session.scalars(
            select(Deployment)
            .join(Environment, Deployment.environment_id == Environment.id)
            .where(Environment.service_id == service_id)
            .order_by(Deployment.id.desc())
        )
    )


# -- dispatch: queued builds go to the shared queue a few at a time, fairly -------------
#
# A queued build waits in the database. Only about as many builds as there are build
# workers wait in the shared ``builds`` queue (where a free worker takes the oldest
# message), so which build runs next is chosen here, each time a place in that queue
# frees, not by the order of arrival: services take turns, the one served least recently
# first, and within a service the oldest build first. One service's backlog of fifty
# then delays another's two by a build each, not by fifty.
#
# A fork's builds (``Build.untrusted``) are a lane of their own: their own shared queue
# (``builds-untrusted``), read only by workers told to take them, counted against the
# workers that ran such builds lately.

# Builds whose first step is in the shared queue and not yet claimed, by "id:attempt".
DISPATCHED_KEY = "portside:builds:dispatched"
UNTRUSTED_DISPATCHED_KEY = "portside:builds:dispatched:untrusted"
DISPATCH_LOCK = 7_370_250_300_001  # pg_advisory_xact_lock key: one dispatcher at a time
# A worker that heartbeated a build this recently counts as one that takes builds.
WORKERS_SEEN_WITHIN = dt.timedelta(minutes=10)
# A queued build's waiting_reason when no worker of its lane was seen within that.
NO_WORKER = "no build worker online"
NO_UNTRUSTED_WORKER = "no build worker for forks' builds online"


class Send(Protocol):
    """Sends a build attempt's chain: a trusted build as ``send(id, attempt)``, a fork's
    with ``untrusted=True`` (to the untrusted queue)."""

    def __call__(self, build_id: int, attempt: int, *, untrusted: bool = ...) -> None: ...


class QueueLength(Protocol):
    """Messages waiting in the shared queue of trusted builds, or with ``untrusted=True``
    in that of forks' builds."""

    def __call__(self, *, untrusted: bool = ...) -> int: ...


def wake_dispatchers(session: Session) -> None:
    """Have the dispatchers look again once this transaction commits (the relay's
    channel: PostgreSQL delivers a NOTIFY with the commit and drops it on rollback)."""
    effects.wake_relay(session)


@dataclass(frozen=True, slots=True)
class Waiting:
    """A queued build as the dispatcher sees it."""

    build_id: int
    attempt: int
    service_id: int
    queued_at: float  # seconds since the epoch
    untrusted: bool = False

    @property
    def member(self) -> str:
        """Its entry among the dispatched: a new attempt is a new entry."""
        return f"{self.build_id}:{self.attempt}"


def fair_order(waiting: Iterable[Waiting], last_served: Mapping[int, float]) -> list[Waiting]:
    """The order builds should start in: services take turns, the one served least
    recently (never: first) leading; within a service the oldest build first."""
    lines: dict[int, deque[Waiting]] = {}
    for build in sorted(waiting, key=lambda b: (b.queued_at, b.build_id)):
        lines.setdefault(build.service_id, deque()).append(build)
    turns = deque(
        sorted(lines, key=lambda s: (last_served.get(s, -math.inf), lines[s][0].queued_at, s))
    )
    order: list[Waiting] = []
    while turns:
        service = turns.popleft()
        order.append(lines[service].popleft())
        if lines[service]:
            turns.append(service)
    return order


def _epoch(moment: dt.datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def waiting_builds(session: Session) -> list[Waiting]:
    """Queued builds, except those a newer queued build of their environment supersedes
    (its supersede task cancels them: building them would be wasted); newer as
    :func:`ancestry.is_newer` tells from the push payloads alone."""
    rows = session.execute(
        select(
            Build.id,
            Build.attempt,
            Build.service_id,
            Build.environment_id,
            Build.commit_sha,
            Build.pushed_at,
            Build.created_at,
            Build.ref,
            Build.untrusted,
        ).where(Build.status == "queued")
    ).all()
    by_environment: dict[int, list[Any]] = {}
    for row in rows:
        by_environment.setdefault(row.environment_id, []).append(row)
    waiting = []
    for environment_id, queued in by_environment.items():
        facts = ancestry.facts_for(session, environment_id) if len(queued) > 1 else {}
        newest = queued[0]
        for row in queued[1:]:
            if ancestry.is_newer(ancestry.of_build(row), ancestry.of_build(newest), facts):
                newest = row
        waiting.append(
            Waiting(
                newest.id,
                newest.attempt,
                newest.service_id,
                _epoch(newest.created_at),
                bool(newest.untrusted),
            )
        )
    return waiting


def workers_at_work(session: Session, *, untrusted: bool) -> int:
    """Build workers that heartbeated a build of that kind within WORKERS_SEEN_WITHIN."""
    count = session.scalar(
        select(func.count(func.distinct(Build.worker))).where(
            Build.worker.is_not(None),
            Build.heartbeat_at >= utcnow() - WORKERS_SEEN_WITHIN,
            Build.untrusted.is_(untrusted),
        )
    )
    return int(count or 0)


def workers_seen(session: Session, *, untrusted: bool = False) -> int:
    """Build workers at work lately on builds of that kind (at least one): how many
    builds may wait for them."""
    return max(1, workers_at_work(session, untrusted=untrusted))


def waiting_reason(session: Session, build: Build) -> str | None:
    """Why a queued build is not taken, when Portside can tell: no worker of its lane
    was seen lately (so it is not simply waiting its turn); why a built one waits at a
    gate (its environment's reason). None otherwise, and for a build that is neither. A
    worker idle longer than WORKERS_SEEN_WITHIN is not seen until it takes a build."""
    if build.status in gates.HELD:
        return build.environment.status_reason
    if build.status != "queued" or workers_at_work(session, untrusted=bool(build.untrusted)):
        return None
    return NO_UNTRUSTED_WORKER if build.untrusted else NO_WORKER


def _last_started(session: Session, service_ids: set[int]) -> dict[int, float]:
    """When a build of each service last started: how recently the service was served."""
    rows = session.execute(
        select(Build.service_id, func.max(Build.started_at))
        .where(Build.service_id.in_(service_ids))
        .group_by(Build.service_id)
    ).all()
    return {service_id: _epoch(started) for service_id, started in rows if started is not None}


def _dispatched(redis: Redis, key: str) -> dict[str, float]:
    entries: Sequence[tuple[Any, float]] = redis.zrange(  # type: ignore[assignment]
        key, 0, -1, withscores=True
    )
    return {
        member.decode() if isinstance(member, bytes) else str(member): float(at)
        for member, at in entries
    }


def dispatch(
    session: Session,
    redis: Redis,
    send: Send,
    *,
    shared_queue_length: QueueLength,
    lost_after: dt.timedelta,
) -> list[int]:
    """Send the next builds to the shared queues, in each up to as many as workers of
    that kind were seen, less the builds still waiting there; return their ids.

    Which builds wait there is kept in Redis beside their messages: a Redis that loses
    its data loses both, and the builds are sent again (the database keeps them queued).
    A message out for ``lost_after`` while the queue is empty went with a worker that
    died before claiming it, and is sent again. A build sent twice runs once: claiming
    its first step lets one message through and refuses the other.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DISPATCH_LOCK})
    waiting = waiting_builds(session)
    sent: list[int] = []
    for untrusted in (False, True):
        lane = {build.member: build for build in waiting if build.untrusted == untrusted}
        sent += _dispatch_lane(
            session,
            redis,
            lane,
            send=send,
            shared_queue_length=shared_queue_length,
            lost_after=lost_after,
            untrusted=untrusted,
        )
    return sent


def _dispatch_lane(
    session: Session,
    redis: Redis,
    waiting: dict[str, Waiting],
    *,
    send: Send,
    shared_queue_length: QueueLength,
    lost_after: dt.timedelta,
    untrusted: bool,
) -> list[int]:
    """dispatch() for the builds of one kind, ``waiting`` by member."""
    key = UNTRUSTED_DISPATCHED_KEY if untrusted else DISPATCHED_KEY
    kind: dict[str, bool] = {"untrusted": True} if untrusted else {}
    marked = _dispatched(redis, key)
    now = time.time()
    gone = [member for member in marked if member not in waiting]
    lost = [
        member
        for member, at in marked.items()
        if member in waiting and now - at > lost_after.total_seconds()
    ]
    if lost and shared_queue_length(**kind) > 0:
        lost = []  # they may still be in the queue, behind busy workers
    if lost:
        log.warning("builds %s left for the queue but never started; sending them again", lost)
    if gone or lost:
        redis.zrem(key, *gone, *lost)
    out = {member: at for member, at in marked.items() if member in waiting and member not in lost}
    free = workers_seen(session, untrusted=untrusted) - len(out)
    candidates = [build for member, build in waiting.items() if member not in out]
    if free <= 0 or not candidates:
        return []
    served = _last_started(session, {build.service_id for build in candidates})
    for member, at in out.items():
        service_id = waiting[member].service_id
        served[service_id] = max(served.get(service_id, -math.inf), at)
    chosen = fair_order(candidates, served)[:free]
    for build in chosen:
        send(build.build_id, build.attempt, **kind)
        redis.zadd(key, {build.member: now})
    return [build.build_id for build in chosen]
