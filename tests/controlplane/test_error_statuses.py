"""Domain errors carry no HTTP status: the API's one table gives it, and the JSON's
``error`` code stays what clients already read."""

from __future__ import annotations

import json

import pytest

from controlplane import errors
from controlplane.api.errors import exception_response


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.Malformed, 400, "bad_request"),
        (errors.Unauthenticated, 401, "unauthorized"),
        (errors.NotPermitted, 403, "forbidden"),
        (errors.NotFound, 404, "not_found"),
        (errors.Conflict, 409, "conflict"),
        (errors.TooLarge, 413, "payload_too_large"),
        (errors.ValidationFailed, 422, "validation_failed"),
        (errors.ComposeRefusedError, 422, "compose_refused"),
        (errors.TemporarilyUnavailable, 503, "unavailable"),
    ],
)
def test_domain_error_answers_with_its_status_and_code(
    error: type[errors.DomainError], status: int, code: str
) -> None:
    response = exception_response(error("no", details={"field": "x"}))
    assert response.status_code == status
    assert json.loads(response.get_data()) == {
        "error": code,
        "message": "no",
        "details": {"field": "x"},
    }


def test_domain_errors_know_nothing_of_http() -> None:
    for error in vars(errors).values():
        if isinstance(error, type) and issubclass(error, errors.DomainError):
            assert not hasattr(error, "status"), error
