"""The dashboard's admin actions besides deploy, approve and promote: create a service, act
on an environment (redeploy, roll back, tear down a preview), and make tokens and hosts,
whose secret is shown once. Each calls the service function the API calls, checked by
:mod:`controlplane.dashboard.forms`."""

from __future__ import annotations

from flask import abort, current_app, g, redirect, render_template, request, url_for
from marshmallow import ValidationError
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from controlplane import schemas
from controlplane.api.auth import forget_host_token
from controlplane.api.requestdb import session
from controlplane.crypto import SecretBox
from controlplane.dashboard.forms import admin_form, committed
from controlplane.dashboard.views import _settings, blueprint
from controlplane.models import Repository
from controlplane.services import (
    catalog,
    envactions,
    hosts,
    listings,
    previews,
    rollbacks,
    servicerules,
    tokens,
)
from controlplane.statuses import BUILD_LANES, TOKEN_SCOPES, TokenScope


def _text(name: str) -> str:
    return (request.form.get(name) or "").strip()


@blueprint.get("/services/new")
def new_service_page() -> str:
    db = session()
    return render_template(
        "service_new.html",
        repositories=db.scalars(select(Repository).order_by(Repository.full_name)).all(),
        hosts=[h for h in hosts.list_hosts(db) if not h.untrusted],
    )


@blueprint.post("/services/new")
def create_service() -> BaseResponse:
    """From the installation's roster (a GitHub repository) or from any git URL."""
    actor = admin_form("creating a service")
    settings = _settings()
    raw: dict[str, object] = {"name": _text("name")}
    source = _text("git_url")
    if source:
        raw["git_url"] = source
    elif repository := _text("repository"):
        raw["repository"] = repository
    for name in ("branch", "host", "port"):
        if value := _text(name):
            raw[name] = value
    try:  # the API's own schema: the same rules and defaults as POST /v1/services
        fields = schemas.ServiceCreateSchema().load(raw)
    except ValidationError as exc:
        abort(400, f"the service was refused: {exc.messages}")
    db = session()
    with committed(db):
        service = catalog.create_service(
            db,
            servicerules.spec_from(fields),
            actor,
            box=SecretBox.from_settings(settings) if settings.secret_key else None,
            allow_local_git=settings.allow_local_git,
        )
    return redirect(url_for("dashboard.service_page", service_id=service.id))


@blueprint.post("/environments/<int:environment_id>/redeploy")
def redeploy_environment(environment_id: int) -> BaseResponse:
    actor = admin_form("redeploying")
    db = session()
    with committed(db):
        build = envactions.redeploy(db, environment_id, actor)
    return redirect(url_for("dashboard.build_page", build_id=build.id))


@blueprint.post("/environments/<int:environment_id>/rollback")
def rollback_environment(environment_id: int) -> BaseResponse:
    """Back to the deployment before the current one, with no build."""
    actor = admin_form("rolling back")
    db = session()
    with committed(db):
        rollbacks.rollback(db, environment_id, None, actor)
    return redirect(url_for("dashboard.environment_page", environment_id=environment_id))


@blueprint.post("/environments/<int:environment_id>/teardown")
def teardown_preview(environment_id: int) -> BaseResponse:
    actor = admin_form("tearing down a preview")
    db = session()
    with committed(db):
        environment = listings.get_environment(db, environment_id)
        if environment.kind != "preview":
            abort(409, "only previews are torn down here; delete the service instead")
        previews.teardown(db, environment, actor, "torn down from the dashboard")
    return redirect(url_for("dashboard.service_page", service_id=environment.service_id))


def admin_only() -> None:
    if g.dashboard_token.scope != TokenScope.ADMIN:
        abort(403, "this page needs an admin token")


@blueprint.get("/tokens")
def tokens_page() -> str:
    admin_only()
    return render_template(
        "tokens.html", tokens=tokens.list_tokens(session()), scopes=TOKEN_SCOPES, lanes=BUILD_LANES
    )


@blueprint.post("/tokens")
def create_token() -> str:
    actor = admin_form("creating a token")
    scope = _text("scope")
    if scope not in TOKEN_SCOPES or scope == TokenScope.HOST:
        abort(400, "choose admin, worker or read (a host's token comes with its host)")
    name = _text("name")
    if not name:
        abort(400, "a token needs a name")
    lane = _text("builds") or None
    if lane is not None and (scope != TokenScope.WORKER or lane not in BUILD_LANES):
        abort(400, "only a worker token has a lane: trusted, untrusted or all")
    db = session()
    with committed(db):
        token, secret = tokens.create_token(db, name, scope, actor=actor, builds=lane)
    return render_template("secret_once.html", what=f"token {token.name} ({scope})", secret=secret)


@blueprint.post("/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int) -> BaseResponse:
    actor = admin_form("revoking a token")
    db = session()
    with committed(db):
        token = tokens.revoke_token(db, token_id, actor)
    forget_host_token(current_app.extensions["portside.redis"], token.public_id)
    return redirect(url_for("dashboard.tokens_page"))


@blueprint.post("/hosts")
def create_host() -> str:
    actor = admin_form("creating a host")
    db = session()
    with committed(db):
        host, secret = hosts.create_host(
            db,
            _text("name"),
            actor,
            request.form.get("previews") == "on",
            untrusted=request.form.get("untrusted") == "on",
        )
    return render_template(
        "secret_once.html", what=f"host {host.name}: its agent's token", secret=secret
    )
