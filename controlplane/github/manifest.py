"""GitHub's App manifest flow, without a web framework: what Portside asks GitHub to create,
where the browser sends it, and the exchange of GitHub's one-time code for the App's
credentials (``POST /app-manifests/{code}/conversions``, which needs no authentication).

The flow: the dashboard posts :func:`manifest` to :func:`new_app_url` from the person's
browser; they confirm on GitHub; GitHub redirects to ``redirect_url`` with ``code`` and the
``state`` Portside gave; :func:`convert` turns the code (single use, valid one hour) into
the App's id, private key and webhook secret.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from controlplane.errors import PermanentError
from controlplane.github.app import TIMEOUT, translate

# What Portside does with each permission: read the code (contents), follow pull requests
# and comment on them (pull_requests, issues), report builds (checks, statuses), record
# environments (deployments), know its repositories (metadata).
PERMISSIONS = {
    "contents": "read",
    "metadata": "read",
    "pull_requests": "write",
    "issues": "write",
    "checks": "write",
    "statuses": "write",
    "deployments": "write",
}
# The events Portside acts on (services.deliveries handles these); installation events are
# sent to every App without asking.
EVENTS = [
    "push",
    "pull_request",
    "check_run",
    "check_suite",
    "status",
    "issue_comment",
    "commit_comment",
]
CALLBACK_PATH = "/setup/github/callback"


@dataclasses.dataclass(frozen=True)
class RegisteredApp:
    """What GitHub answers a conversion with (the secrets are shown this once)."""

    app_id: int
    slug: str
    html_url: str
    owner_login: str | None
    client_id: str | None
    client_secret: str | None
    private_key: str
    webhook_secret: str


class ManifestError(PermanentError):
    """GitHub refused the conversion, or answered something that is not an App."""


def web_url(api_url: str) -> str:
    """GitHub's web address for its API's: github.com for api.github.com, the host of a
    GitHub Enterprise Server (``https://host/api/v3``), else the API's own base."""
    parts = urlsplit(api_url.rstrip("/"))
    if parts.netloc == "api.github.com":
        return "https://github.com"
    path = parts.path.removesuffix("/api/v3")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def new_app_url(api_url: str, state: str, organization: str | None = None) -> str:
    """Where the browser posts the manifest: the person's account, or an organization's."""
    owner = f"/organizations/{quote(organization, safe='')}" if organization else ""
    return f"{web_url(api_url)}{owner}/settings/apps/new?state={quote(state, safe='')}"


def manifest(name: str, portside_url: str, webhook_url: str) -> dict[str, Any]:
    """The App Portside needs, filled in: GitHub shows it for confirmation, name editable."""
    base = portside_url.rstrip("/")
    return {
        "name": name,
        "url": base,
        "description": "Push-to-deploy with Portside",
        "hook_attributes": {"url": webhook_url, "active": True},
        "redirect_url": f"{base}{CALLBACK_PATH}",
        "public": False,
        "default_permissions": PERMISSIONS,
        "default_events": EVENTS,
    }


def convert(api_url: str, code: str) -> RegisteredApp:
    """Exchange the one-time ``code`` for the App's credentials."""
    url = f"{api_url.rstrip('/')}/app-manifests/{quote(code, safe='')}/conversions"
    try:
        response = requests.post(
            url, headers={"Accept": "application/vnd.github+json"}, timeout=TIMEOUT
        )
    except requests.RequestException as exc:
        raise translate(exc, "the App manifest conversion") from None
    if response.status_code != 201:
        message = _message(response)
        raise ManifestError(
            f"GitHub refused the App manifest code ({response.status_code}: {message}); "
            "codes are single-use and expire after an hour: start again"
        )
    try:
        body = response.json()
        owner = body.get("owner") or {}
        return RegisteredApp(
            app_id=int(body["id"]),
            slug=str(body["slug"]),
            html_url=str(body["html_url"]),
            owner_login=owner.get("login"),
            client_id=body.get("client_id"),
            client_secret=body.get("client_secret"),
            private_key=str(body["pem"]),
            webhook_secret=str(body["webhook_secret"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ManifestError("GitHub's answer to the manifest conversion is not an App") from None


def _message(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", ""))[:200]
    except (ValueError, AttributeError):
        return response.text[:200]
