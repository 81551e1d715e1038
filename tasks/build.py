"""Build-queue tasks: thin wrappers around ``buildworker.runner`` (no database here, and
no control plane: a build host loads this module alone, from :mod:`tasks.buildmain`).

The first step is taken from a shared queue (``builds``, or ``builds-untrusted`` for a
fork's code); it pins the rest of the chain to this node's own queue, because the
workspace and the built images live here. The worker reads its own queue first
(tasks.buildmain.build_queues), so it ends one build before it clones the next.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import docker
from celery import Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from redis import Redis, RedisError

from buildworker import channel, info
from buildworker.api import ControlPlane, StepRefused
from buildworker.errors import PermanentBuildError, TransientBuildError
from buildworker.handoff import Handoff, HandoffRefused, Sealer
from buildworker.runner import StepRunner, WorkerConfig, WrongWorker
from buildworker.settings import BuildWorkerSettings
from contracts.steps import FIRST_STEP, STEPS, Step
from tasks.app import celery_app, configured_settings, node_queue

log = logging.getLogger(__name__)

WORKER_INFO = "portside.worker_info"
MAX_RETRIES = 4


def node_name(hostname: str) -> str:
    """``build-1@host`` → ``build-1``: the name a build worker was started with."""
    return hostname.split("@", 1)[0]


def worker_settings() -> BuildWorkerSettings:
    """The build worker's settings, from :mod:`tasks.buildmain`."""
    return configured_settings(celery_app, BuildWorkerSettings)


@functools.cache
def runner(hostname: str) -> StepRunner:
    settings = worker_settings()
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=10)

    def sink(build_id: int, lines: list[str]) -> None:
        # The live log is best effort: Redis restarting must not fail the build itself.
        try:
            channel.append(redis, build_id, lines)
        except RedisError as exc:
            log.warning("build %s: %d log lines lost: %s", build_id, len(lines), exc)

    def stop_reason(build_id: int, attempt: int) -> str | None:
        # Redis away: the heartbeat's 409 stops the build instead, a few seconds later.
        try:
            return channel.stop_reason(redis, build_id, attempt)
        except RedisError as exc:
            log.warning("build %s: cannot read its stop signal: %s", build_id, exc)
            return None

    return StepRunner(
        ControlPlane(
            settings.url, settings.token.reveal(), allow_insecure=settings.allow_insecure_url
        ),
        docker.from_env(timeout=300),
        WorkerConfig(
            node=hostname,
            registry=settings.registry,
            workspace_root=Path(settings.data_dir) / "workspaces",
            untrusted=settings.build_untrusted,
            cache_max=settings.cache_max,
        ),
        sink,
        stop_reason,
    )


@functools.cache
def sealer() -> Sealer:
    """Seals the claims handed from step to step with this worker's token."""
    return Sealer(worker_settings().token.reveal())


def _pin_rest_of_chain(task: Task[Any, Any]) -> None:
    """Route the remaining steps of this chain to this node's own queue."""
    queue = node_queue(node_name(task.request.hostname or ""))
    for signature in task.request.chain or []:
        signature.setdefault("options", {})["queue"] = queue


def _hand_over(
    task: Task[Any, Any], to: Step, build_id: int, attempt: int, handoff: Handoff
) -> None:
    """Give the next step of this chain what this one leaves it (its claim, the state),
    sealed for that step of this build attempt: Celery sends the next task, with this
    argument, when this one returns."""
    following = (task.request.chain or [])[-1:]
    for signature in following:
        sealed = sealer().seal(handoff, build_id, attempt, to.value)
        signature.setdefault("kwargs", {})["handoff"] = sealed


def _received(
    task: Task[Any, Any], step: Step, build_id: int, attempt: int, sealed: str | None
) -> Handoff | None:
    """What the step before handed over; its claim only on the first delivery (a retry
    or a redelivered message claims again: the build may have moved on meanwhile).

    Every step after the first needs one that opens for exactly this step: a message
    without it, or with one forged, moved or replayed, is refused (HandoffRefused)."""
    if step is FIRST_STEP:
        return None
    if not sealed:
        raise HandoffRefused(f"{step} of build {build_id} came without a hand-off")
    handoff = sealer().open(sealed, build_id, attempt, step.value)
    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    if task.request.retries or redelivered:
        return handoff.unclaimed()
    return handoff


def _run_step(
    task: Task[Any, Any],
    step: Step,
    build_id: int,
    attempt: int,
    *,
    untrusted: bool,
    handoff: str | None,
) -> None:
    steps = runner(task.request.hostname or "unknown")
    if step is FIRST_STEP:
        _pin_rest_of_chain(task)
    try:
        received = _received(task, step, build_id, attempt, handoff)
    except HandoffRefused as exc:
        # Not from this worker's previous step: dropped untouched, never trusted. The
        # build stops heartbeating and is taken over as a new attempt.
        log.warning("step %s of build %s refused: %s", step, build_id, exc)
        raise Ignore(str(exc)) from None
    try:
        passed = steps.run(step, build_id, attempt, untrusted=untrusted, handoff=received)
    except WrongWorker as exc:
        # A message sent to the wrong queue: dropped untouched; the dispatcher sends the
        # build again (it is still queued), or it is taken over once claimed.
        log.warning("step %s of build %s refused: %s", step, build_id, exc)
        raise Ignore(str(exc)) from None
    except StepRefused as exc:
        # Done already, cancelled, or taken over by another attempt: stop this chain.
        raise Ignore(str(exc)) from None
    except TransientBuildError as exc:
        if task.request.retries >= MAX_RETRIES:
            steps.give_up(step, build_id, attempt, str(exc))
            raise Ignore(str(exc)) from None
        raise task.retry(exc=exc, countdown=min(60, 2 ** (task.request.retries + 1))) from None
    except PermanentBuildError as exc:
        raise Ignore(str(exc)) from None
    except SoftTimeLimitExceeded:
        limit = worker_settings().build_timeout
        steps.give_up(step, build_id, attempt, f"the build exceeded its time limit of {limit} s")
        raise Ignore("time limit") from None
    if passed is not None and step.next is not None:
        _hand_over(task, step.next, build_id, attempt, passed)


def _step_task(step: Step) -> Any:
    def run(
        self: Task[Any, Any],
        build_id: int,
        attempt: int,
        untrusted: bool = False,
        handoff: str | None = None,
    ) -> None:
        _run_step(self, step, build_id, attempt, untrusted=untrusted, handoff=handoff)

    run.__name__ = step.value
    run.__doc__ = f"Pipeline step {step.value!r} of one build attempt (idempotent per build/step)."
    return celery_app.task(
        name=step.task_name,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=MAX_RETRIES,
    )(run)


# Registered by name (portside.clone, ... as Flower shows them), one task per step.
STEP_TASKS = {step: _step_task(step) for step in STEPS}


@celery_app.task(name=WORKER_INFO, bind=True, acks_late=True, ignore_result=False)
def worker_info(self: Task[Any, Any]) -> dict[str, Any]:
    """Report which node answered and what it can build with (fleet health check)."""
    return info.describe(self.request.hostname or "unknown")
