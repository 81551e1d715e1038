"""A service's own page: its live environments, its recent builds and, for an admin, a
Deploy form that builds and deploys any branch, tag or commit to production (the service
function behind ``POST /v1/services/{id}/deploy``)."""

from __future__ import annotations

from flask import abort, current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from controlplane.api.requestdb import session
from controlplane.crypto import SecretBox
from controlplane.dashboard.forms import admin_form, committed
from controlplane.dashboard.views import (
    EnvironmentRow,
    _settings,
    blueprint,
)
from controlplane.models import Service
from controlplane.services import appsetup, envactions, listings, pending
from controlplane.services.githubwrites import environment_url
from controlplane.statuses import EnvironmentStatus

RECENT_BUILDS = 20


def _service_or_404(service_id: int) -> Service:
    service = session().get(Service, service_id)
    if service is None or service.deleted_at is not None:
        abort(404, f"There is no service {service_id}.")
    return service


@blueprint.get("/services/<int:service_id>")
def service_page(service_id: int) -> str:
    db = session()
    service = _service_or_404(service_id)
    live = sorted(
        (env for env in service.environments if env.status != EnvironmentStatus.INACTIVE),
        key=lambda e: (e.kind != "production", e.kind == "preview", -(e.pr_number or 0), e.name),
    )
    latest = listings.latest_builds(db, [env.id for env in live])
    interval = _settings().agent_interval
    rows = [
        EnvironmentRow(
            env,
            environment_url(env),
            env.current_deployment,
            latest.get(env.id),
            pending.pending_reason(db, env, interval),
        )
        for env in live
    ]
    recent = listings.read_page(db, listings.builds(service_id=service.id), 1, RECENT_BUILDS)
    return render_template("service.html", service=service, rows=rows, builds=recent.items)


@blueprint.post("/services/<int:service_id>/deploy")
def deploy_service(service_id: int) -> BaseResponse:
    """The Deploy form: an admin's session and the form's CSRF token, as the Approve
    button; an empty ref deploys the head of the service's branch."""
    actor = admin_form("deploying")
    db = session()
    _service_or_404(service_id)
    ref = request.form.get("ref", "").strip() or None
    github = appsetup.github_of(current_app.extensions)
    settings = _settings()
    # A git-URL service's credentials are opened to resolve the ref, as the API does.
    box = SecretBox.from_settings(settings) if settings.secret_key else None
    with committed(db):
        build = envactions.deploy_ref(db, github, service_id, ref, actor, box=box)
    return redirect(url_for("dashboard.build_page", build_id=build.id))
