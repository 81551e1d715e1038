"""The dashboard's pages: thin views over the models and services, rendered with Jinja.

Every page needs a session (see :mod:`controlplane.dashboard.login`); without one a page
redirects to the login form and the log stream answers 401.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.sansio.blueprints import BlueprintSetupState
from redis import Redis
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from controlplane.api.pipeline import log_stream_response
from controlplane.api.requestdb import session
from controlplane.dashboard import login, present
from controlplane.dashboard.forms import admin_form, committed
from controlplane.models import (
    Build,
    Deployment,
    Environment,
    Service,
)
from controlplane.services import (
    approvals,
    builds,
    catalog,
    dispatch,
    images,
    listings,
    logstream,
    pending,
)
from controlplane.services.githubwrites import environment_url
from controlplane.settings import Settings
from controlplane.statuses import BUILD_STATUSES, DELIVERY_STATUSES, EnvironmentStatus, StepStatus

blueprint = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard-static",
)

PAGE_SIZE = 50
# The build page shows this many log lines; the whole log is at log.txt.
PAGE_LOG_LINES = 5000
FAILURE_TAIL = 25
PUBLIC_ENDPOINTS = ("dashboard.login", "dashboard.static")
# Event streams an EventSource follows: without a session they answer 401, no redirect.
STREAM_ENDPOINTS = ("dashboard.log_stream", "dashboard.environment_log_stream")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@blueprint.record_once
def _setup(state: BlueprintSetupState) -> None:
    app = state.app
    if not isinstance(app, Flask):
        raise TypeError("the dashboard is registered on a Flask app")
    settings: Settings = app.extensions["portside.settings"]
    login.configure(app, settings)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["portside.settings"]
    return settings


def _redis() -> Redis:
    client: Redis = current_app.extensions["portside.redis"]
    return client


def _secret_key() -> bytes:
    key = current_app.secret_key
    return key.encode() if isinstance(key, str) else bytes(key or b"")


# ---------------------------------------------------------------------------------------
# Session, headers, errors
# ---------------------------------------------------------------------------------------


@blueprint.before_request
def _require_login() -> BaseResponse | None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    token = login.current_token(session(), _secret_key())
    if token is None:
        if request.endpoint in STREAM_ENDPOINTS:
            return Response("log in first\n", status=401, mimetype="text/plain")
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
    g.dashboard_token = token
    return None


@blueprint.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "dashboard.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@blueprint.context_processor
def _template_helpers() -> dict[str, Any]:
    token = g.get("dashboard_token")
    return {
        **present.helpers(),
        "viewer": token.name if token is not None else None,
        "viewer_scope": token.scope if token is not None else None,
        "csrf_token": login.csrf_token(),
    }


@blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    status = exc.code or 500
    return render_template("error.html", status=status, message=exc.description), status


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never another origin (see :func:`login.safe_next`)."""
    return login.safe_next(target) or url_for("dashboard.services_page")


@blueprint.route("/login", methods=["GET", "POST"], endpoint="login")
def login_page() -> BaseResponse | tuple[str, int]:
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if login.current_token(session(), _secret_key()) is not None:
            return redirect(target)
        return render_template("login.html", next=target, error=None), 200
    presented = request.form.get("token", "")
    token = login.log_in(session(), presented, _secret_key()) if presented.strip() else None
    if token is None:
        error = "That token is not a live read or admin token."
        return render_template("login.html", next=target, error=error), 401
    return redirect(target)


@blueprint.post("/logout")
def logout() -> BaseResponse:
    if not login.csrf_ok(request.form.get("csrf")):
        abort(400, "the logout form is out of date; reload the page")
    login.log_out()
    return redirect(url_for("dashboard.login"))


# ---------------------------------------------------------------------------------------
# Services and environments
# ---------------------------------------------------------------------------------------


@dataclass
class EnvironmentRow:
    environment: Environment
    url: str | None
    deployment: Deployment | None
    latest_build: Build | None
    # What a waiting environment waits for (services.pending), on the services page.
    pending_reason: str | None = None


@dataclass
class ServiceRow:
    service: Service
    production: list[EnvironmentRow] = field(default_factory=list)
    previews: list[EnvironmentRow] = field(default_factory=list)
    closed_previews: int = 0


@blueprint.get("/")
def services_page() -> str:
    db = session()
    listed = listings.live_services(db)
    latest = listings.latest_builds(db, [env.id for s in listed for env in s.environments])
    interval = _settings().agent_interval
    rows = []
    for service in listed:
        row = ServiceRow(service)
        ordered = sorted(
            service.environments,
            key=lambda e: (
                e.kind != "production",
                e.kind == "preview",
                -(e.pr_number or 0),
                e.name,
            ),
        )
        for env in ordered:
            # A closed preview stays listed while its registry refuses to delete its images,
            # so the reason (and what to fix) shows until they are gone.
            refused = env.images_pending and env.status_reason
            if (
                env.kind != "production"
                and env.status == EnvironmentStatus.INACTIVE
                and not refused
            ):
                if env.kind == "preview":  # a deleted staging environment is simply gone
                    row.closed_previews += 1
                continue
            item = EnvironmentRow(
                env,
                environment_url(env),
                env.current_deployment,
                latest.get(env.id),
                pending.pending_reason(db, env, interval),
            )
            # Staging environments beside production, above the previews.
            (row.previews if env.kind == "preview" else row.production).append(item)
        rows.append(row)
    return render_template("services.html", rows=rows)


@blueprint.post("/environments/<int:environment_id>/approve")
def approve_environment(environment_id: int) -> BaseResponse:
    """The Approve button of a deployment held for approval or of a fork preview: an
    admin's session, the form's CSRF token, and the commit the page showed (a push since
    then makes it refuse)."""
    actor = admin_form("approving a commit")
    sha = request.form.get("sha")
    if not sha:
        abort(400, "the form is out of date; reload the page")
    db = session()
    with committed(db):
        approval = approvals.approve(db, environment_id, actor, sha)
    anchor = f"service-{approval.environment.service_id}"
    return redirect(url_for("dashboard.services_page", _anchor=anchor))


# ---------------------------------------------------------------------------------------
# Builds
# ---------------------------------------------------------------------------------------


def _page_number() -> int:
    try:
        return max(1, int(request.args.get("page", "1")))
    except ValueError:
        return 1


def _filters(**values: object) -> dict[str, object]:
    """The query arguments a pager keeps: the filters in use, and no empty ones."""
    return {name: value for name, value in values.items() if value not in (None, "")}


@blueprint.get("/builds")
def builds_page() -> str:
    db = session()
    service_id = request.args.get("service", type=int)
    status = request.args.get("status")
    if status not in BUILD_STATUSES:
        status = None
    page = _page_number()
    statement = listings.builds(service_id=service_id, status=status)
    listed = listings.read_page(db, statement, page, PAGE_SIZE)
    return render_template(
        "builds.html",
        builds=listed.items,
        page=page,
        has_more=listed.total > page * PAGE_SIZE,
        services=catalog.list_services(db),
        service_id=service_id,
        status=status,
        statuses=BUILD_STATUSES,
        filters=_filters(service=service_id, status=status),
    )


def _build_or_404(build_id: int) -> Build:
    build = session().get(Build, build_id)
    if build is None:
        abort(404, f"There is no build {build_id}.")
    return build


@blueprint.get("/builds/<int:build_id>")
def build_page(build_id: int) -> str:
    build = _build_or_404(build_id)
    lines, last_id = logstream.lines_so_far(_redis(), build)
    finished = build.status in builds.FINISHED
    failed_step = next((s for s in build.steps if s.status == StepStatus.FAILED), None)
    deployment = listings.latest_deployment_of(session(), build.id)
    return render_template(
        "build.html",
        build=build,
        finished=finished,
        failed_step=failed_step,
        deployment=deployment,
        images=images.listed(build),
        waiting_reason=dispatch.waiting_reason(session(), build),
        lines=lines[-PAGE_LOG_LINES:],
        hidden_lines=max(0, len(lines) - PAGE_LOG_LINES),
        tail=lines[-FAILURE_TAIL:],
        stream_url=None
        if finished
        else url_for("dashboard.log_stream", build_id=build.id, after=last_id),
    )


@blueprint.get("/builds/<int:build_id>/log.txt")
def log_text(build_id: int) -> Response:
    lines, _last = logstream.lines_so_far(_redis(), _build_or_404(build_id))
    return Response("\n".join(lines) + ("\n" if lines else ""), mimetype="text/plain")


@blueprint.get("/builds/<int:build_id>/log/stream")
def log_stream(build_id: int) -> Response:
    """The build's log as server-sent events for this session (EventSource sends no
    bearer header): the API's stream, resuming after ``Last-Event-ID`` or ``?after=``."""
    _build_or_404(build_id)
    after = request.headers.get("Last-Event-ID") or request.args.get("after")
    return log_stream_response(build_id, after)


# ---------------------------------------------------------------------------------------
# Deliveries
# ---------------------------------------------------------------------------------------


@blueprint.get("/deliveries")
def deliveries_page() -> str:
    db = session()
    status = request.args.get("status")
    if status not in DELIVERY_STATUSES:
        status = None
    page = _page_number()
    listed = listings.read_page(db, listings.deliveries(status=status), page, PAGE_SIZE)
    return render_template(
        "deliveries.html",
        deliveries=listed.items,
        started=listings.builds_started_by(db, [d.id for d in listed.items]),
        page=page,
        has_more=listed.total > page * PAGE_SIZE,
        status=status,
        statuses=DELIVERY_STATUSES,
        filters=_filters(status=status),
    )
