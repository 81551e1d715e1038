"""Bearer tokens on /v1: 401 without a live token, 403 out of scope, JSON error bodies."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from controlplane.models import ApiToken
from controlplane.services import hosts, tokens


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def assert_error(response: TestResponse, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    assert body["error"] == error
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


def create_token(client: FlaskClient, admin_headers: dict[str, str], scope: str) -> Any:
    response = client.post(
        "/v1/tokens", json={"name": f"made-{scope}", "scope": scope}, headers=admin_headers
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-portside-token"},
        {"Authorization": "Bearer ps_000000000000_unknownsecret"},
        {"Authorization": "Bearer ps__"},
    ],
    ids=["none", "empty", "no-secret", "blank-secret", "basic", "malformed", "unknown", "bare"],
)
def test_no_valid_token_is_401(client: FlaskClient, headers: dict[str, str]) -> None:
    for method, path in (("get", "/v1/hosts"), ("post", "/v1/tokens"), ("get", "/v1/services")):
        response = getattr(client, method)(path, headers=headers, json={})

        body = assert_error(response, 401, "unauthorized")
        assert set(body) == {"error", "message"}


def test_a_wrong_secret_for_a_known_token_is_401(
    client: FlaskClient, read_headers: dict[str, str]
) -> None:
    good = read_headers["Authorization"]

    response = client.get("/v1/hosts", headers={"Authorization": good[:-2] + "xx"})

    assert_error(response, 401, "unauthorized")
    assert client.get("/v1/hosts", headers=read_headers).status_code == 200


def test_a_token_revoked_through_the_api_is_401(
    client: FlaskClient, admin_headers: dict[str, str], db_session: Session
) -> None:
    row, secret = tokens.create_token(db_session, "to-revoke", "read")
    db_session.commit()
    assert client.get("/v1/hosts", headers=bearer(secret)).status_code == 200

    response = client.delete(f"/v1/tokens/{row.id}", headers=admin_headers)

    assert response.status_code == 204
    assert_error(client.get("/v1/hosts", headers=bearer(secret)), 401, "unauthorized")
    listed = client.get("/v1/tokens", headers=admin_headers).get_json()
    assert [t["revoked_at"] is not None for t in listed if t["id"] == row.id] == [True]


def test_an_admin_creates_tokens_and_hosts_through_the_api(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    made = create_token(client, admin_headers, "read")
    assert made["scope"] == "read"
    assert client.get("/v1/hosts", headers=bearer(made["token"])).status_code == 200

    response = client.post("/v1/hosts", json={"name": "web-1"}, headers=admin_headers)

    assert response.status_code == 201, response.get_data(as_text=True)
    host_token = response.get_json()["token"]
    # A host's token is for its agent only.
    assert_error(client.get("/v1/hosts", headers=bearer(host_token)), 403, "forbidden")


def test_a_token_revoked_through_the_service_is_401(
    client: FlaskClient, db_session: Session
) -> None:
    row, secret = tokens.create_token(db_session, "to-revoke", "admin")
    db_session.commit()
    assert client.get("/v1/tokens", headers=bearer(secret)).status_code == 200

    tokens.revoke_token(db_session, row.id, "test")
    db_session.commit()

    assert_error(client.get("/v1/tokens", headers=bearer(secret)), 401, "unauthorized")


def test_revoking_an_unknown_token_is_404(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    body = assert_error(client.delete("/v1/tokens/999999", headers=admin_headers), 404, "not_found")
    assert set(body) == {"error", "message"}


@pytest.mark.parametrize(
    ("path", "payload"),
    [("/v1/tokens", {"name": "x", "scope": "admin"}), ("/v1/hosts", {"name": "web-9"})],
)
def test_a_read_token_cannot_use_admin_endpoints(
    client: FlaskClient, read_headers: dict[str, str], path: str, payload: dict[str, str]
) -> None:
    response = client.post(path, json=payload, headers=read_headers)

    body = assert_error(response, 403, "forbidden")
    assert set(body) == {"error", "message"}


def test_nothing_is_created_when_forbidden(
    client: FlaskClient, read_headers: dict[str, str], db_session: Session
) -> None:
    client.post("/v1/tokens", json={"name": "sneaky", "scope": "admin"}, headers=read_headers)
    client.post("/v1/hosts", json={"name": "sneaky-host"}, headers=read_headers)

    names = set(db_session.scalars(text("SELECT name FROM api_tokens")))
    assert names == {"test-read"}
    assert db_session.scalar(text("SELECT count(*) FROM hosts")) == 0


def test_a_host_token_is_only_for_its_agent(client: FlaskClient, db_session: Session) -> None:
    _host, secret = hosts.create_host(db_session, "web-1", "test")
    db_session.commit()

    for path in ("/v1/services", "/v1/hosts", "/v1/tokens"):
        assert_error(client.get(path, headers=bearer(secret)), 403, "forbidden")


def test_a_read_token_can_list_hosts(
    client: FlaskClient, read_headers: dict[str, str], db_session: Session
) -> None:
    hosts.create_host(db_session, "web-1", "test")
    db_session.commit()

    response = client.get("/v1/hosts", headers=read_headers)

    assert response.status_code == 200
    assert [host["name"] for host in response.get_json()] == ["web-1"]


def test_an_admin_token_can_use_read_endpoints(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    assert client.get("/v1/hosts", headers=admin_headers).status_code == 200
    assert client.get("/v1/services", headers=admin_headers).status_code == 200


def test_tokens_are_stored_hashed(
    client: FlaskClient, admin_headers: dict[str, str], db_session: Session
) -> None:
    made = create_token(client, admin_headers, "worker")
    plaintext = made["token"]
    secret_part = plaintext.split("_", 2)[2]

    row = db_session.get(ApiToken, made["id"])
    assert row is not None
    assert row.secret_hash == hashlib.sha256(secret_part.encode()).digest()
    raw = db_session.execute(
        text("SELECT * FROM api_tokens WHERE id = :id"), {"id": made["id"]}
    ).one()
    for value in raw:
        shown = bytes(value) if isinstance(value, memoryview) else value
        if isinstance(shown, bytes):
            assert secret_part.encode() not in shown
            assert plaintext.encode() not in shown
        else:
            assert secret_part not in str(shown)
    # The listing never shows it again either.
    listed = client.get("/v1/tokens", headers=admin_headers)
    assert secret_part not in listed.get_data(as_text=True)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x", "scope": "superuser"}, "scope"),
        ({"name": "x", "scope": "host"}, "scope"),
        ({"scope": "read"}, "name"),
        ({"name": "", "scope": "read"}, "name"),
        ({"name": "x"}, "scope"),
        ({"name": "x", "scope": "worker", "builds": "forks"}, "builds"),
    ],
)
def test_an_invalid_token_request_is_422_with_the_fields(
    client: FlaskClient,
    admin_headers: dict[str, str],
    db_session: Session,
    payload: dict[str, str],
    field: str,
) -> None:
    response = client.post("/v1/tokens", json=payload, headers=admin_headers)

    body = assert_error(response, 422, "validation_failed")
    assert set(body) == {"error", "message", "details"}
    assert field in body["details"]["json"]
    assert db_session.scalar(text("SELECT count(*) FROM api_tokens")) == 1


def test_a_worker_token_is_made_for_a_lane_of_builds(
    client: FlaskClient, admin_headers: dict[str, str], db_session: Session
) -> None:
    made = client.post(
        "/v1/tokens",
        json={"name": "forks", "scope": "worker", "builds": "untrusted"},
        headers=admin_headers,
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    assert made.get_json()["builds"] == "untrusted"
    row = db_session.get(ApiToken, made.get_json()["id"])
    assert row is not None and row.build_lane == "untrusted"
    assert create_token(client, admin_headers, "worker")["builds"] is None  # trusted builds
    # A lane is a worker token's alone.
    refused = client.post(
        "/v1/tokens", json={"name": "r", "scope": "read", "builds": "all"}, headers=admin_headers
    )
    assert "worker" in assert_error(refused, 400, "bad_request")["message"]


def test_unknown_routes_and_methods_answer_json(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    assert_error(client.get("/v1/nothing-here", headers=admin_headers), 404, "not_found")
    assert_error(client.put("/v1/tokens", headers=admin_headers), 405, "method_not_allowed")
