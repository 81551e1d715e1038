"""The Celery app, shared by the control plane's processes and the build worker.

The app object exists at import time (Celery needs a module-level app to find tasks) but
holds no configuration until :func:`configure` is called by the process entry point, with
that process's own settings: the control plane's ``Settings`` or the build worker's
``BuildWorkerSettings``. Nothing here imports either side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from celery import Celery
from kombu.entity import Exchange, Queue

from contracts.steps import STEPS

CONTROL_QUEUE = "control"
BUILDS_QUEUE = "builds"
# The first steps of forks' builds: only workers told to take untrusted builds read it.
UNTRUSTED_BUILDS_QUEUE = "builds-untrusted"

celery_app = Celery("portside", set_as_current=False)
ProcessSettings = TypeVar("ProcessSettings")


class BrokerSettings(Protocol):
    """What the app's configuration needs of a process's settings."""

    @property
    def redis_url(self) -> str: ...

    @property
    def build_timeout(self) -> int: ...


def node_queue(hostname: str) -> str:
    """The direct queue of one build worker: later steps of a build stay on its node."""
    return f"builds.{hostname}"


def _drop_cached_clients() -> None:
    """Forget the broker pools and the result backend made from an earlier configuration
    (tests configure the app again in one process; Celery keeps them otherwise, and a
    backend first used before any result store was set stays disabled for good)."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    celery_app._backend_cache = None  # a thread-safe backend is kept here
    vars(celery_app._local).pop("backend", None)  # any other in the calling thread


def configure(
    settings: BrokerSettings, beat_schedule: Mapping[str, dict[str, Any]] | None = None
) -> Celery:
    """Point the app at the broker and set the delivery guarantees Portside relies on;
    ``settings`` are kept for the process's tasks (:func:`configured_settings`)."""
    _drop_cached_clients()
    visibility_timeout = settings.build_timeout * 2
    celery_app.conf.update(
        broker_url=settings.redis_url,
        result_backend=settings.redis_url,
        broker_transport_options={
            # Longer than the longest build: an unacked step is not handed to another
            # worker while the first is still working on it.
            "visibility_timeout": visibility_timeout,
            # Consume a worker's queues in the order it names them (BRPOP over the list
            # as given) instead of round robin: a build worker's own queue, holding the
            # next step of the build it started, always before the shared one.
            "queue_order_strategy": "priority",
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
            # Publishing gives up within a second when Redis is down: the caller has
            # committed its record and the outbox re-sends it (GitHub waits 10 s at most).
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        result_backend_transport_options={"visibility_timeout": visibility_timeout},
        broker_connection_retry_on_startup=True,
        task_queues=(
            Queue(CONTROL_QUEUE, Exchange(CONTROL_QUEUE), routing_key=CONTROL_QUEUE),
            Queue(BUILDS_QUEUE, Exchange(BUILDS_QUEUE), routing_key=BUILDS_QUEUE),
            Queue(
                UNTRUSTED_BUILDS_QUEUE,
                Exchange(UNTRUSTED_BUILDS_QUEUE),
                routing_key=UNTRUSTED_BUILDS_QUEUE,
            ),
        ),
        task_default_queue=CONTROL_QUEUE,
        task_routes={step.task_name: {"queue": BUILDS_QUEUE} for step in STEPS},
        # A step over the build time limit fails with that reason (SoftTimeLimitExceeded).
        task_soft_time_limit=settings.build_timeout,
        task_time_limit=settings.build_timeout + 60,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        # No task-sent events: they double the Redis traffic of the webhook hot path;
        # workers still send received/started/succeeded events for Flower.
        task_send_sent_event=False,
        worker_send_task_events=True,
        worker_prefetch_multiplier=1,
        # Reconnects after a broker restart while holding an unacknowledged message.
        worker_consumer="tasks.process:Consumer",
        # The web process must answer GitHub quickly even when Redis is down: the
        # delivery is already committed and the outbox re-drives it.
        task_publish_retry=False,
        # Results are kept only by tasks that opt in; a sender then never touches the
        # result store (which would block on a Redis outage).
        task_ignore_result=True,
        result_expires=24 * 3600,
        redis_socket_connect_timeout=2,
        redis_socket_timeout=5,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        beat_schedule=dict(beat_schedule or {}),
        portside_settings=settings,
    )
    return celery_app


def configured_settings(app: Celery, kind: type[ProcessSettings]) -> ProcessSettings:
    """The settings this process configured the app with, of the kind its tasks expect."""
    settings = app.conf.get("portside_settings")
    if not isinstance(settings, kind):
        raise RuntimeError("tasks.app.configure() has not been called in this process")
    return settings
