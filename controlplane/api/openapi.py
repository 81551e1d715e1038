"""The OpenAPI document's error responses, added to every ``/v1`` operation in one place.

flask-smorest documents what the decorators say (the success response, 422 for a request
that fails its schema, the paginated ``X-Pagination`` header); the errors that come from
authentication and from the services are the same for every view, so they are added by
an apispec plugin here rather than repeated on each one. Each refers to a response that
flask-smorest registers under the status's name with Portside's ``ApiErrorSchema``.

Swagger UI at ``/v1/docs`` loads its scripts and styles from this server: the dist files
that the flask-swagger-ui package ships (pinned in setup.cfg), not from a CDN, so the
page works offline and runs no script that was not installed with Portside.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from apispec import BasePlugin
from flask import Blueprint

# Where the Swagger UI page finds swagger-ui-bundle.js and friends (OPENAPI_SWAGGER_UI_URL).
SWAGGER_UI_URL = "/v1/docs/assets/"

MUTATING = ("post", "put", "patch", "delete")
WITH_BODY = ("post", "put", "patch")


class ErrorResponsesPlugin(BasePlugin):
    """401/403 on every operation, 404 where a path names a record, 400/409/422 on writes."""

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if not path or not path.startswith("/v1/") or not operations:
            return
        if path.startswith("/v1/agent/"):
            return  # documented by hand in controlplane.api.agent
        for method, operation in operations.items():
            if method not in ("get", *MUTATING) or not isinstance(operation, dict):
                continue
            responses: dict[Any, Any] = operation.setdefault("responses", {})
            wanted = {401: "UNAUTHORIZED", 403: "FORBIDDEN"}
            if "{" in path:
                wanted[404] = "NOT_FOUND"
            if "requestBody" in operation:
                wanted[400] = "BAD_REQUEST"  # a body that is not JSON at all
            if method in MUTATING:
                wanted[409] = "CONFLICT"
            if method in WITH_BODY:
                wanted[422] = "UNPROCESSABLE_ENTITY"
            for status, name in wanted.items():
                if status not in responses and str(status) not in responses:
                    responses[status] = name


def swagger_ui_assets() -> Blueprint:
    """A blueprint serving swagger-ui's dist files under :data:`SWAGGER_UI_URL`."""
    dist = resources.files("flask_swagger_ui") / "dist"
    return Blueprint(
        "swagger_ui_assets",
        __name__,
        static_folder=str(dist),
        static_url_path=SWAGGER_UI_URL.rstrip("/"),
    )
