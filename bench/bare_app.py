"""The baseline: a bare Flask app that reads a delivery's body and answers 204.

Served by gunicorn with the same config as the control plane
(``bench.bare_app:app``), it measures what gunicorn + Flask cost on their own.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/github")
    def github_webhook() -> tuple[str, int]:
        request.get_data(cache=False)
        return "", 204

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    return app


app = create_app()
