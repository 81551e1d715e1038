"""The setup page: what a new installation still lacks (a GitHub App, a build worker, an
agent, a reachable registry), with the command or the button for each, and the GitHub App
manifest flow behind the button (:mod:`controlplane.github.manifest`).

Registering an App is an admin's action: the form carries the session's CSRF token, and
the ``state`` sent to GitHub is a one-time value kept in the session, so a callback that
did not start from this session's button is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
from urllib.parse import urlsplit

import requests
from flask import abort, current_app, g, render_template, request, session
from sqlalchemy import func, select

from controlplane.api.requestdb import session as db_session
from controlplane.crypto import SecretBox
from controlplane.dashboard.forms import admin_form
from controlplane.dashboard.views import _settings, blueprint
from controlplane.errors import PortsideError
from controlplane.github import manifest
from controlplane.models import Host
from controlplane.services import appsetup, dispatch
from controlplane.statuses import TokenScope

STATE_KEY = "github_manifest_state"
AGENT_RECENT = dt.timedelta(minutes=2)
REGISTRY_TIMEOUT = 2


@dataclasses.dataclass(frozen=True)
class Step:
    """One line of the checklist: done or not, what is there, what to do otherwise."""

    name: str
    done: bool
    detail: str
    todo: str = ""


def _github_step() -> Step:
    source: appsetup.AppSource = current_app.extensions["portside.github_source"]
    if source.configured:
        return Step("GitHub App", True, "configured by PORTSIDE_GITHUB_APP_ID")
    row = appsetup.registration(db_session())
    if row is not None:
        return Step(
            "GitHub App",
            True,
            f"{row.slug} (App {row.app_id}), registered by {row.registered_by}; "
            f"install it on your repositories: {row.html_url}/installations/new",
        )
    return Step(
        "GitHub App",
        False,
        "none yet",
        "register one below, or set PORTSIDE_GITHUB_APP_ID, PORTSIDE_GITHUB_PRIVATE_KEY_PATH "
        "and PORTSIDE_GITHUB_WEBHOOK_SECRET",
    )


def _worker_step() -> Step:
    db = db_session()
    seen = dispatch.workers_at_work(db, untrusted=False) + dispatch.workers_at_work(
        db, untrusted=True
    )
    if seen:
        return Step("Build worker", True, f"{seen} at work in the last ten minutes")
    return Step(
        "Build worker",
        False,
        "none at work in the last ten minutes (an idle one shows once it takes a build)",
        "start one: portside buildworker",
    )


def _agent_step() -> Step:
    since = dt.datetime.now(dt.UTC) - AGENT_RECENT
    online = db_session().scalar(select(func.count(Host.id)).where(Host.last_seen_at >= since))
    if online:
        return Step("Agent", True, f"{online} host(s) reported in the last two minutes")
    return Step(
        "Agent",
        False,
        "no host reported recently",
        "portside hosts create NAME, then run portside agent there with its token",
    )


def _registry_step() -> Step:
    registry = _settings().registry
    try:
        answer = requests.get(f"http://{registry}/v2/", timeout=REGISTRY_TIMEOUT)
        reachable = answer.status_code in (200, 401)
        if not reachable:
            answer = requests.get(f"https://{registry}/v2/", timeout=REGISTRY_TIMEOUT)
            reachable = answer.status_code in (200, 401)
    except requests.RequestException:
        reachable = False
    if reachable:
        return Step("Registry", True, f"{registry} answers")
    return Step(
        "Registry",
        False,
        f"{registry} does not answer /v2/",
        "set PORTSIDE_REGISTRY to a registry the build workers can push to",
    )


def _webhook_url() -> str:
    settings = _settings()
    base = settings.url if urlsplit(settings.url).hostname not in (None, "") else ""
    return f"{(base or request.url_root).rstrip('/')}/webhooks/github"


@blueprint.context_processor
def _first_page_hint() -> dict[str, list[Step]]:
    """The services page lists what is still missing (the checks that need no network;
    the registry is probed on the Setup page only)."""
    if request.endpoint != "dashboard.services_page" or "dashboard_token" not in g:
        return {}
    return {
        "setup_missing": [s for s in (_github_step(), _worker_step(), _agent_step()) if not s.done]
    }


@blueprint.get("/setup")
def setup_page() -> str:
    steps = [_github_step(), _worker_step(), _agent_step(), _registry_step()]
    return render_template(
        "setup.html",
        steps=steps,
        can_register=not steps[0].done,
        has_secret_key=bool(_settings().secret_key),
        webhook_url=_webhook_url(),
        default_name=f"Portside {urlsplit(request.url_root).hostname or ''}".strip(),
    )


@blueprint.post("/setup/github")
def start_github_app() -> tuple[str, int, dict[str, str]]:
    """Hand the browser a form that posts the manifest to GitHub."""
    admin_form("registering the GitHub App")
    settings = _settings()
    if not settings.secret_key:
        abort(409, "Set PORTSIDE_SECRET_KEY first: the App's private key is stored encrypted.")
    name = (request.form.get("name") or "").strip()[:34] or "Portside"
    webhook_url = (request.form.get("webhook_url") or "").strip() or _webhook_url()
    if urlsplit(webhook_url).scheme not in ("http", "https"):
        abort(400, "The webhook URL must be an http(s) URL.")
    organization = (request.form.get("organization") or "").strip() or None
    state = secrets.token_urlsafe(24)
    session[STATE_KEY] = state
    portside_url = request.url_root.rstrip("/")
    action = manifest.new_app_url(settings.github_api_url, state, organization)
    document = manifest.manifest(name, portside_url, webhook_url)
    page = render_template(
        "setup_github.html", action=action, manifest=json.dumps(document), document=document
    )
    # The dashboard's policy lets forms post only to itself; this one goes to GitHub.
    origin = manifest.web_url(settings.github_api_url)
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; base-uri 'none'; "
        f"form-action 'self' {origin}; frame-ancestors 'none'"
    )
    return page, 200, {"Content-Security-Policy": policy}


@blueprint.get(manifest.CALLBACK_PATH)
def github_app_callback() -> tuple[str, int]:
    """GitHub sends the browser back here with a one-time code: exchange and keep it."""
    if g.dashboard_token.scope != TokenScope.ADMIN:
        abort(403, "Registering the GitHub App needs an admin token.")
    expected = session.pop(STATE_KEY, None)
    state = request.args.get("state", "")
    if not isinstance(expected, str) or not secrets.compare_digest(expected, state):
        abort(400, "This GitHub callback did not start from this session's setup page.")
    code = request.args.get("code", "")
    if not code:
        abort(400, "GitHub sent no code.")
    settings = _settings()
    db = db_session()
    try:
        registered = manifest.convert(settings.github_api_url, code)
        row = appsetup.store(
            db, SecretBox.from_settings(settings), registered, f"token:{g.dashboard_token.name}"
        )
    except PortsideError as exc:
        db.rollback()
        abort(502, str(exc))
    db.commit()
    source: appsetup.AppSource = current_app.extensions["portside.github_source"]
    source.look_again()
    page = render_template(
        "setup_done.html", app=row, install_url=f"{row.html_url}/installations/new"
    )
    return page, 200
