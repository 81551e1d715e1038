"""``POST /webhooks/github``: verify, commit, answer — in that order.

A plain WSGI endpoint mounted in front of the Flask app (:func:`mount`): a delivery needs
nothing of Flask (no session, URL map or contexts), and GitHub's deliveries are the path
that must stay fast under a storm. Errors are answered in the API's shape all the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Request, Response
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from controlplane.api.errors import error_response, exception_response
from controlplane.db import Database
from controlplane.github import webhooks
from controlplane.services import deliveries
from controlplane.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PATH = "/webhooks/github"


class GitHubWebhookEndpoint:
    """The WSGI application answering GitHub's deliveries."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self._settings = settings
        self._database = database

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        # Enforced from Content-Length, and while streaming a body of unknown length.
        request.max_content_length = self._settings.webhook_max_bytes
        try:
            response = self._receive(request)
        except Exception as exc:  # every failure is answered in the API's shape
            response = exception_response(exc)
        return response(environ, start_response)

    def _receive(self, request: Request) -> Response:
        if request.path not in ("", "/"):  # what follows the mounted path
            raise NotFound()
        if request.method != "POST":
            raise MethodNotAllowed(valid_methods=["POST"])
        secret = self._settings.github_webhook_secret.reveal()
        if not secret:
            return error_response(
                503, "unavailable", "PORTSIDE_GITHUB_WEBHOOK_SECRET is not configured"
            )
        length = request.content_length
        if length is not None and length > self._settings.webhook_max_bytes:
            return error_response(413, "payload_too_large", "the delivery is too large")
        body = request.get_data(cache=False)
        presented = request.headers.get(webhooks.SIGNATURE_HEADER)
        if not webhooks.verify_signature(body, presented, secret):
            return error_response(401, "unauthorized", "signature verification failed")
        delivery = webhooks.parse(dict(request.headers), body)
        if delivery.event == "ping":
            return _json({"status": "pong", "zen": delivery.payload.get("zen")}, 200)
        recorded = deliveries.intake(self._database, delivery, body)
        if recorded.kind == "duplicate":
            answer = {
                "status": "duplicate",
                "id": recorded.delivery_id,
                "delivery_status": recorded.status,
            }
            return _json(answer, 200)
        return _json({"status": recorded.status, "id": recorded.delivery_id}, 202)


def _json(body: dict[str, object], status: int) -> Response:
    return Response(json.dumps(body), status, mimetype="application/json")


def mount(app: WSGIApplication, endpoint: GitHubWebhookEndpoint) -> WSGIApplication:
    """``app`` with the webhook endpoint answering its path in front of it."""
    return DispatcherMiddleware(app, {PATH: endpoint})
