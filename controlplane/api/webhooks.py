"""``POST /webhooks/github``: verify, commit, enqueue, answer — in that order."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, jsonify, request

from controlplane.api.errors import error_response
from controlplane.github import webhooks
from controlplane.services import deliveries
from controlplane.settings import Settings

blueprint = Blueprint("webhooks", __name__)


@blueprint.post("/webhooks/github")
def github_webhook() -> Response | tuple[Response, int]:
    settings: Settings = current_app.extensions["portside.settings"]
    secret = settings.github_webhook_secret.reveal()
    if not secret:
        return error_response(
            503, "unavailable", "PORTSIDE_GITHUB_WEBHOOK_SECRET is not configured"
        )
    length = request.content_length
    if length is not None and length > settings.webhook_max_bytes:
        return error_response(413, "payload_too_large", "the delivery is too large")
    # Werkzeug enforces MAX_CONTENT_LENGTH while streaming a body of unknown length.
    body = request.get_data(cache=False)
    if not webhooks.verify_signature(body, request.headers.get(webhooks.SIGNATURE_HEADER), secret):
        return error_response(401, "unauthorized", "signature verification failed")
    delivery = webhooks.parse(dict(request.headers), body)
    if delivery.event == "ping":
        return jsonify(status="pong", zen=delivery.payload.get("zen")), 200
    recorded = deliveries.intake(current_app.extensions["portside.db"], delivery, body)
    if recorded.kind == "duplicate":
        return jsonify(
            status="duplicate", id=recorded.delivery_id, delivery_status=recorded.status
        ), 200
    answer = json.dumps({"status": recorded.status, "id": recorded.delivery_id})
    return current_app.response_class(answer, 202, mimetype="application/json")
