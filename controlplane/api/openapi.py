"""The OpenAPI document's error responses, added to every ``/v1`` operation in one place.

flask-smorest documents what the decorators say (the success response, 422 for a request
that fails its schema, the paginated ``X-Pagination`` header); the errors that come from
authentication and from the services are the same for every view, so they are added by
an apispec plugin here rather than repeated on each one. Each refers to a response that
flask-smorest registers under the status's name with Portside's ``ApiErrorSchema``.
"""

from __future__ import annotations

from typing import Any

from apispec import BasePlugin

MUTATING = ("post", "put", "patch", "delete")
WITH_BODY = ("post", "put", "patch")


class ErrorResponsesPlugin(BasePlugin):  # type: ignore[misc]
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
