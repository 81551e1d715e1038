"""Control-queue tasks: thin wrappers that open a session and call controlplane.services."""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from redis import Redis
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.errors import PermanentError, TransientError
from controlplane.github.app import GitHubRateLimited
from controlplane.models import Build
from controlplane.services import (
    backstop,
    builds,
    checks,
    deliveries,
    effects,
    feedback,
    gitsources,
    installations,
    notifications,
    previewcleanup,
    previews,
    pushes,
    registries,
    retention,
)
from controlplane.services.outcomes import HandlerContext
from controlplane.statuses import EnvironmentStatus
from tasks import pipeline, runtime
from tasks.app import CONTROL_QUEUE, celery_app
from tasks.relay import Relay, Senders
from tasks.runtime import settings_of

log = logging.getLogger(__name__)

RETRYABLE = (TransientError, OperationalError)


@celery_app.task(
    name=pipeline.PROCESS_DELIVERY,
    bind=True,
    acks_late=True,
    autoretry_for=RETRYABLE,
    retry_backoff=2,
    retry_backoff_max=300,
    max_retries=8,
)
def process_delivery(self: Task[Any, Any], delivery_id: int) -> list[int]:
    """Apply one delivery (idempotent: a processed delivery is skipped)."""
    database = runtime.database()
    context = HandlerContext(runtime.github_app(), settings_of(celery_app).preview_domain)
    try:
        with database.session_scope() as session:
            started = deliveries.process(session, delivery_id, context)
    except RETRYABLE as exc:
        if self.request.retries >= (self.max_retries or 0):
            with database.session_scope() as session:
                deliveries.mark_failed(session, delivery_id, f"gave up: {exc}")
        raise
    return started.builds


@celery_app.task(name=pipeline.REDRIVE_DELIVERIES, acks_late=True)
def redrive_deliveries() -> int:
    """Put back in the outbox the deliveries whose message was lost (the relay sends
    them again); return how many."""
    grace = dt.timedelta(seconds=settings_of(celery_app).redrive_after)
    with runtime.database().session_scope() as session:
        requeued = deliveries.requeue_lost(session, grace)
    if requeued:
        log.info("re-drove %d deliveries", requeued)
    return requeued


@celery_app.task(name=pipeline.RECONCILE_BRANCHES, acks_late=True)
def reconcile_branches() -> list[int]:
    """The backstop for missed pushes: build every tracked branch head not yet built."""
    github = runtime.github_app()
    if github is None:
        return []
    with runtime.database().session_scope() as session:
        return backstop.reconcile_branches(session, github)


@celery_app.task(name=pipeline.POLL_GIT_SERVICES, acks_late=True)
def poll_git_services() -> list[int]:
    """Poll the git-URL services that are due (``git ls-remote``) and queue a build for
    every branch head that changed."""
    settings = settings_of(celery_app)
    box = SecretBox.from_settings(settings) if settings.secret_key else None
    with runtime.database().session_scope() as session:
        return gitsources.poll_due(session, box)


@celery_app.task(name=pipeline.SUPERSEDE, acks_late=True)
def supersede(build_id: int) -> list[int]:
    """Cancel the older unfinished builds of a new build's environment (or the new one,
    when its commit is an ancestor of one built), asking GitHub's compare API what the
    push payloads do not tell; the dispatcher meanwhile never sends a build a queued
    newer one supersedes by the payloads."""
    with runtime.database().session_scope() as session:
        build = session.get(Build, build_id)
        if build is None:
            raise PermanentError(f"build {build_id} does not exist")
        compare = pushes.github_compare(runtime.github_app(), build.service)
        return builds.supersede_older(session, build, compare)


@celery_app.task(name=pipeline.CHECK_GATES, acks_late=True)
def check_gates() -> list[str]:
    """Ask GitHub about the commits whose builds wait for their checks: deploy those that
    passed, fail those that failed or timed out (the backstop for missed deliveries)."""
    with runtime.database().session_scope() as session:
        return checks.poll(session, runtime.github_app())


@celery_app.task(name=pipeline.TAKE_OVER_STALE_BUILDS, acks_late=True)
def take_over_stale_builds() -> list[int]:
    """Queue again, as a new attempt, every running build whose worker went silent."""
    stale_after = dt.timedelta(seconds=settings_of(celery_app).build_stale_after)
    taken: list[int] = []
    with runtime.database().session_scope() as session:
        for build in builds.stale_builds(session, stale_after):
            log.warning("build %s lost its worker %s; taking it over", build.id, build.worker)
            builds.take_over(session, build)
            taken.append(build.id)
    return taken


# An event writes up to five times (commit status, Check Run, GitHub deployment and its
# status, PR comment) and runs again from the start after any of them failed.
FEEDBACK_RETRIES = 8
# A rate-limited event is tried again after GitHub's wait (at most RATE_LIMIT_COUNTDOWN_MAX
# seconds at a time, within the broker's visibility timeout), this many times in all.
RATE_LIMIT_RETRIES = 24
RATE_LIMIT_COUNTDOWN_MAX = 900


@celery_app.task(
    name=pipeline.GITHUB_FEEDBACK,
    bind=True,
    acks_late=True,
    autoretry_for=RETRYABLE,
    retry_backoff=5,
    max_retries=FEEDBACK_RETRIES,
)
def github_feedback(self: Task[Any, Any], event: str, object_id: int) -> None:
    """Commit statuses, deployments and PR comments on GitHub; never blocks a deploy. A
    rate limit longer than the client waits out is retried after GitHub's wait, rather
    than holding a worker for minutes."""
    github = runtime.github_app()
    if github is None:
        return
    try:
        with runtime.database().session_scope() as session:
            feedback.send(session, github, settings_of(celery_app), event, object_id)
    except GitHubRateLimited as exc:
        countdown = min(RATE_LIMIT_COUNTDOWN_MAX, max(1, math.ceil(exc.retry_after)))
        log.warning("GitHub feedback %s %s waits %d s: %s", event, object_id, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown, max_retries=RATE_LIMIT_RETRIES) from exc


@celery_app.task(name=pipeline.RECONCILE_INSTALLATIONS, acks_late=True)
def reconcile_installations() -> dict[int, str]:
    """The daily repair of the installations and their rosters against GitHub's lists."""
    github = runtime.github_app()
    if github is None:
        return {}
    return installations.sync(runtime.database(), github)


@celery_app.task(
    name=pipeline.DELETE_IMAGES,
    acks_late=True,
    autoretry_for=RETRYABLE,
    retry_backoff=10,
    max_retries=5,
)
def delete_images(images: list[dict[str, Any]]) -> int:
    """Delete torn-down previews' images from the registry, by digest; returns how many
    previews are left without images (a refusal is shown on its environment)."""
    settings = settings_of(celery_app)
    box = SecretBox.from_settings(settings) if settings.secret_key else None
    by_environment: dict[int, list[dict[str, Any]]] = {}
    for image in images:
        by_environment.setdefault(image["environment_id"], []).append(image)
    cleaned = 0
    for environment_id, its_images in by_environment.items():
        with runtime.database().session_scope() as session:
            cleaned += previewcleanup.delete_images(
                session, environment_id, its_images, _push_credentials(session, box)
            )
    return cleaned


def _push_credentials(
    session: Session, box: SecretBox | None
) -> Callable[[str, int | None], registries.Credentials]:
    """The push credentials for a repository and installation, read in ``session``
    (none without PORTSIDE_SECRET_KEY: nothing stored can be decrypted)."""

    def credentials_for(repository: str, installation_id: int | None) -> registries.Credentials:
        if box is None:
            return registries.Credentials(repository, None, None)
        return registries.credentials_for(session, box, repository, installation_id)

    return credentials_for


@celery_app.task(
    name=pipeline.PRUNE_REGISTRY,
    acks_late=True,
    autoretry_for=RETRYABLE,
    retry_backoff=60,
    max_retries=3,
)
def prune_registry() -> dict[str, int]:
    """Delete production images past each service's last PORTSIDE_REGISTRY_KEEP from
    the registry (services.retention); counts of what it deleted, kept and was refused."""
    settings = settings_of(celery_app)
    box = SecretBox.from_settings(settings) if settings.secret_key else None
    with runtime.database().session_scope() as session:
        pruned = retention.prune_registry(
            session, settings.registry_keep, _push_credentials(session, box)
        )
    return {
        "deleted": len(pruned.deleted),
        "protected": len(pruned.protected),
        "refused": len(pruned.refused),
    }


@celery_app.task(name=pipeline.CLEAN_UP_PREVIEWS, acks_late=True)
def clean_up_previews() -> list[str]:
    """Tear down previews whose PR closed unnoticed, idle ones, and those over the limit."""
    github = runtime.github_app()
    removed: list[str] = []
    with runtime.database().session_scope() as session:
        doomed = previewcleanup.stale_previews(session)
        if github is not None:
            doomed += previewcleanup.closed_on_github(session, github)
        for environment, reason in doomed:
            if environment.status != EnvironmentStatus.INACTIVE:
                previews.teardown(session, environment, "portside:cleanup", reason)
                removed.append(environment.name)
        # Images a registry refused (or that outlived their task's retries) are tried again.
        for images in previewcleanup.pending_image_deletions(session):
            effects.note_doomed_images(session, images)
    return removed


NOTIFY_MAX_RETRIES = 6
NOTIFY_BACKOFF = 2  # seconds, doubled each time: 2, 4, 8, ... at most NOTIFY_BACKOFF_MAX
NOTIFY_BACKOFF_MAX = 300


def notify_countdown(retries: int) -> int:
    return int(min(NOTIFY_BACKOFF * 2**retries, NOTIFY_BACKOFF_MAX))


@celery_app.task(
    name=pipeline.NOTIFY,
    bind=True,
    acks_late=True,
    max_retries=NOTIFY_MAX_RETRIES,
)
def notify(
    self: Task[Any, Any], event: str, object_id: int, target_ids: list[int] | None = None
) -> list[int]:
    """Send a deploy event to the service's notification targets; the targets that failed
    (and only those) are tried again with backoff, a bounded number of times."""
    settings = settings_of(celery_app)
    if not settings.secret_key:
        log.warning("PORTSIDE_SECRET_KEY is not set: notifications cannot be signed or sent")
        return []
    box = SecretBox.from_settings(settings)
    try:
        with runtime.database().session_scope() as session:
            failed = notifications.send(session, box, event, object_id, target_ids=target_ids)
    except RETRYABLE as exc:  # the database, not a target: try the whole event again
        raise self.retry(exc=exc, countdown=notify_countdown(self.request.retries)) from exc
    if failed and self.request.retries < (self.max_retries or 0):
        raise self.retry(
            args=[event, object_id, failed], countdown=notify_countdown(self.request.retries)
        )
    if failed:
        log.error("gave up notifying targets %s of %s %s", failed, event, object_id)
    return failed


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    runtime.reset()


_relays: list[Relay] = []


@worker_ready.connect
def _redrive_on_start(sender: Any = None, **_: Any) -> None:
    """A control worker that starts runs the relay (deliveries, outbox rows, queued
    builds), re-drives lost deliveries and catches up installations whose events were
    missed while none ran (the sync is idempotent: several workers starting at once is
    harmless)."""
    queues = {queue.name for queue in sender.app.amqp.queues.consume_from.values()}
    if CONTROL_QUEUE in queues:
        # A database of its own: this thread lives in the pool's parent process.
        settings = settings_of(sender.app)
        relay = Relay(
            Database(settings),
            Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5),
            Senders(
                delivery=pipeline.enqueue_delivery,
                effect=pipeline.send_effect,
                build=pipeline.send_build,
                shared_queue_length=pipeline.shared_queue_length,
            ),
            dt.timedelta(seconds=settings.build_stale_after),
        )
        relay.start()
        _relays.append(relay)
        # Received deliveries are the relay's; this re-sends enqueued ones whose message
        # was lost while no worker ran (beat repeats it every 30 s).
        sender.app.send_task(pipeline.REDRIVE_DELIVERIES, queue=CONTROL_QUEUE)
        sender.app.send_task(pipeline.RECONCILE_INSTALLATIONS, queue=CONTROL_QUEUE)


@worker_shutdown.connect
def _stop_relay(**_: Any) -> None:
    while _relays:
        relay = _relays.pop()
        relay.stop()
        relay.database.dispose()
