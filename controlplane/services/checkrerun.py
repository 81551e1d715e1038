"""A person asked GitHub to re-run a build's Check Run, or clicked its Redeploy button."""

from __future__ import annotations

from sqlalchemy.orm import Session

from controlplane.models import (
    Build,
    WebhookDelivery,
)
from controlplane.services import commands, pushes
from controlplane.services.githubwrites import CHECK_NAME, REDEPLOY_ACTION
from controlplane.services.outcomes import HandlerContext, Outcome
from controlplane.statuses import EnvironmentStatus


def handle_check_run(
    session: Session, delivery: WebhookDelivery, context: HandlerContext
) -> Outcome:
    """``check_run`` ``rerequested`` on a build's Check Run (a person clicked "Re-run"):
    a new build of that commit for the same environment, once per delivery, while it is
    still the environment's head (re-running an older commit's run must not deploy old
    code over a newer push); ``requested_action`` with :data:`REDEPLOY_ACTION`'s
    identifier redeploys production (see :func:`commands.redeploy_check_run`). Any other
    action, or another app's run, is not Portside's."""
    payload = delivery.payload
    run = payload.get("check_run") or {}
    identifier = (payload.get("requested_action") or {}).get("identifier")
    redeploy = delivery.action == "requested_action" and identifier == REDEPLOY_ACTION["identifier"]
    if delivery.action != "rerequested" and not redeploy:
        return Outcome("ignored", f"check_run {delivery.action}: nothing to do")
    if refusal := pushes.installation_refusal(session, delivery) or pushes.repository_refusal(
        session, delivery
    ):
        return Outcome("ignored", refusal)
    external_id = str(run.get("external_id") or "")
    build = session.get(Build, int(external_id)) if external_id.isdigit() else None
    app = context.github
    if (
        run.get("name") != CHECK_NAME
        or (app is not None and (run.get("app") or {}).get("id") != app.app_id)
        or build is None
        or build.service.repository_id != delivery.repository_id
        or build.commit_sha != run.get("head_sha")
        or build.check_run_id not in (None, run.get("id"))  # the build's own run, no other
    ):
        return Outcome("ignored", f"check run {run.get('id')} is not a Portside build's")
    environment = build.environment
    if environment.status == EnvironmentStatus.INACTIVE or build.service.deleted_at is not None:
        return Outcome("ignored", f"{environment.name} is gone: build {build.id} is not rebuilt")
    if redeploy:
        return commands.redeploy_check_run(session, delivery, build)
    if environment.head_sha != build.commit_sha:
        return Outcome(
            "ignored",
            f"{build.commit_sha[:7]} is no longer the head of {environment.name}: not rebuilt",
        )
    rebuilt = pushes.start_build(
        session,
        build.service,
        environment,
        build.commit_sha,
        branch=build.branch,
        trigger_key=f"check_run:{delivery.id}",
        delivery_id=delivery.id,
        commit_message=build.commit_message,
        author=(payload.get("sender") or {}).get("login") or build.author,
        pushed_at=build.pushed_at,
        untrusted=build.untrusted,
        ref=build.ref,  # a chosen ref's build is rebuilt as chosen (ordered by time)
    )
    if rebuilt is None:
        return Outcome("ignored", f"build {build.id} was already rebuilt for this request")
    session.flush()
    return Outcome("processed", f"build {rebuilt.id} rebuilds {build.commit_sha[:7]}")
