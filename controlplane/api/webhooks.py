"""``POST /webhooks/github``: verify, commit, answer — in that order.

A plain WSGI endpoint mounted in front of the Flask app (:func:`mount`): a delivery needs
nothing of Flask or of werkzeug's request and response objects, and GitHub's deliveries
are the path that must stay fast under a storm (every microsecond of Python here is CPU
the database and the other workers do not get). Errors are answered in the API's shape
all the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wsgi import get_input_stream

from controlplane.api.errors import exception_response
from controlplane.db import Database
from controlplane.errors import TemporarilyUnavailable, TooLarge, Unauthenticated
from controlplane.github import webhooks
from controlplane.services import deliveries
from controlplane.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PATH = "/webhooks/github"

# The WSGI environ keys of the headers a delivery is parsed from.
_ENVIRON_KEYS = {
    name: "HTTP_" + name.upper().replace("-", "_") for name in webhooks.DELIVERY_HEADERS
}
_SIGNATURE_KEY = "HTTP_" + webhooks.SIGNATURE_HEADER.upper().replace("-", "_")
_STATUS_LINES = {200: "200 OK", 202: "202 Accepted"}


class GitHubWebhookEndpoint:
    """The WSGI application answering GitHub's deliveries."""

    def __init__(
        self, settings: Settings, database: Database, webhook_secret: Callable[[], str]
    ) -> None:
        self._settings = settings
        self._database = database
        self._webhook_secret = webhook_secret

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            status, answer = self._receive(environ)
        except Exception as exc:  # every failure is answered in the API's shape
            return exception_response(exc)(environ, start_response)
        body = json.dumps(answer).encode()
        start_response(
            _STATUS_LINES[status],
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _receive(self, environ: WSGIEnvironment) -> tuple[int, dict[str, Any]]:
        if environ.get("PATH_INFO", "") not in ("", "/"):  # what follows the mounted path
            raise NotFound()
        if environ["REQUEST_METHOD"] != "POST":
            raise MethodNotAllowed(valid_methods=["POST"])
        secret = self._webhook_secret()
        if not secret:
            raise TemporarilyUnavailable(
                "no webhook secret: set PORTSIDE_GITHUB_WEBHOOK_SECRET or register the "
                "GitHub App from the dashboard's setup page"
            )
        header = environ.get(_SIGNATURE_KEY)
        if not header or not header.startswith("sha256="):
            # Refused before the body is read: an unsigned sender costs no upload.
            raise Unauthenticated("signature verification failed")
        body = _read_body(environ, self._settings.webhook_max_bytes)
        if not webhooks.verify_signature(body, header, secret):
            raise Unauthenticated("signature verification failed")
        headers = {name: environ.get(key, "") for name, key in _ENVIRON_KEYS.items()}
        delivery = webhooks.parse(headers, body)
        if delivery.event == "ping":
            return 200, {"status": "pong", "zen": delivery.payload.get("zen")}
        recorded = deliveries.intake(self._database, delivery, body)
        if recorded.kind == "duplicate":
            answer = {
                "status": "duplicate",
                "id": recorded.delivery_id,
                "delivery_status": recorded.status,
            }
            return 200, answer
        return 202, {"status": recorded.status, "id": recorded.delivery_id}


def _read_body(environ: WSGIEnvironment, limit: int) -> bytes:
    """The whole body, refused from its Content-Length or, chunked, while it streams."""
    try:
        return get_input_stream(environ, max_content_length=limit).read()
    except RequestEntityTooLarge:
        raise TooLarge("the delivery is too large") from None


def mount(app: WSGIApplication, endpoint: GitHubWebhookEndpoint) -> WSGIApplication:
    """``app`` with the webhook endpoint answering its path in front of it."""
    return DispatcherMiddleware(app, {PATH: endpoint})
