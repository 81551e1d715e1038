"""What the control plane may use to send work: task names only, never task objects.

Sending goes through :data:`tasks.app.celery_app` by stable name, so the web process
never imports task code (and with it the build worker's dependencies).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import chain

from contracts.steps import STEPS
from controlplane.services import effects
from controlplane.settings import Settings
from tasks.app import BUILDS_QUEUE, CONTROL_QUEUE, UNTRUSTED_BUILDS_QUEUE, celery_app, configure

PROCESS_DELIVERY = "portside.process_delivery"
REDRIVE_DELIVERIES = "portside.redrive_deliveries"
RECONCILE_BRANCHES = "portside.reconcile_branches"
POLL_GIT_SERVICES = "portside.poll_git_services"
RECONCILE_INSTALLATIONS = "portside.reconcile_installations"
SUPERSEDE = "portside.supersede"
TAKE_OVER_STALE_BUILDS = "portside.take_over_stale_builds"
GITHUB_FEEDBACK = "portside.github_feedback"
DELETE_IMAGES = "portside.delete_images"
CLEAN_UP_PREVIEWS = "portside.clean_up_previews"
PRUNE_REGISTRY = "portside.prune_registry"
NOTIFY = "portside.notify"
CHECK_GATES = "portside.check_gates"

log = logging.getLogger(__name__)


def control_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """What beat sends to the control queue, and how often (seconds)."""
    return {
        "redrive-deliveries": {"task": REDRIVE_DELIVERIES, "schedule": 30.0},
        "reconcile-branches": {"task": RECONCILE_BRANCHES, "schedule": 300.0},
        # Each git-URL service is polled at its own interval; this is the shortest one.
        "poll-git-services": {"task": POLL_GIT_SERVICES, "schedule": 10.0},
        "reconcile-installations": {"task": RECONCILE_INSTALLATIONS, "schedule": 24 * 3600.0},
        "clean-up-previews": {"task": CLEAN_UP_PREVIEWS, "schedule": 600.0},
        "check-gates": {"task": CHECK_GATES, "schedule": 30.0},
        "prune-registry": {"task": PRUNE_REGISTRY, "schedule": 3600.0},
        "take-over-stale-builds": {
            "task": TAKE_OVER_STALE_BUILDS,
            "schedule": max(5.0, settings.build_stale_after / 3),
        },
    }


def configure_sender(settings: Settings) -> None:
    """Point the control plane's side (web, CLI, control worker, beat) at the broker."""
    configure(settings, control_schedule(settings))


def enqueue_delivery(delivery_id: int) -> None:
    """Queue the processing of a committed delivery; raises if the broker is unreachable."""
    celery_app.send_task(
        PROCESS_DELIVERY, args=[delivery_id], queue=CONTROL_QUEUE, ignore_result=True
    )


# The control task that sends each kind of outbox row (controlplane.services.effects).
EFFECT_TASKS: dict[str, str] = {
    effects.Kind.FEEDBACK: GITHUB_FEEDBACK,
    effects.Kind.NOTIFICATION: NOTIFY,
    effects.Kind.DELETE_IMAGES: DELETE_IMAGES,
    effects.Kind.SUPERSEDE: SUPERSEDE,
    effects.Kind.CHECK_GATES: CHECK_GATES,
}


def send_effect(kind: str, args: list[Any]) -> None:
    """Send one outbox row as its control task (the relay does); raises if the broker is
    unreachable. A kind this code does not know (written by a newer version) is logged
    and dropped rather than blocking the rows behind it."""
    task = EFFECT_TASKS.get(kind)
    if task is None:
        log.error("outbox row of unknown kind %r dropped (args %r)", kind, args)
        return
    celery_app.send_task(task, args=args, queue=CONTROL_QUEUE, ignore_result=True)


def send_build(build_id: int, attempt: int, *, untrusted: bool = False) -> None:
    """Send one build attempt's chain; only the dispatcher does, when the build's turn
    comes (controlplane.services.dispatch.dispatch)."""
    build_chain(build_id, attempt, untrusted=untrusted).apply_async()


def shared_queue_length(*, untrusted: bool = False) -> int:
    """Messages waiting in a shared builds queue (a message a worker took is not)."""
    queue = UNTRUSTED_BUILDS_QUEUE if untrusted else BUILDS_QUEUE
    with celery_app.connection_for_write() as connection:
        declared = connection.default_channel.queue_declare(queue=queue)
        return int(declared.message_count)


def build_chain(build_id: int, attempt: int, *, untrusted: bool = False) -> chain:
    """The pipeline of one build attempt, from stable task names; the first step goes to
    the shared builds queue of its kind (a fork's code to ``builds-untrusted``) and pins
    the rest to the node that took it. A fork's steps say so, and a worker that must not
    take them (or one too old to know the argument) refuses them before doing anything."""
    queue = UNTRUSTED_BUILDS_QUEUE if untrusted else BUILDS_QUEUE
    return chain(
        *(
            celery_app.signature(
                step.task_name,
                args=(build_id, attempt),
                kwargs={"untrusted": True} if untrusted else {},
                immutable=True,
                queue=queue,
                ignore_result=True,
            )
            for step in STEPS
        )
    )
