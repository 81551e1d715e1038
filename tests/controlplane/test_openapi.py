"""The OpenAPI document at /v1/openapi.json: valid, complete, and honest about errors."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from controlplane.db import Database
from controlplane.models import Installation, Repository
from controlplane.services import catalog, hosts, servicerules

METHODS = ("get", "post", "put", "patch", "delete")
# Served by flask-smorest itself, not part of the API they describe.
DOCUMENT_ROUTES = {"/v1/openapi.json", "/v1/docs", "/v1/docs/assets/<path:filename>"}
# A service's variables and notification targets are a handful each, read whole.
UNPAGINATED_LISTS = {
    "/v1/services/{service_id}/variables",
    "/v1/services/{service_id}/notifications",
}


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json
    return body


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_the_document_validates(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_v1_route_is_documented(app: Flask, document: dict[str, Any]) -> None:
    routes = {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/") and rule.rule not in DOCUMENT_ROUTES
        for method in rule.methods or ()
        if method.lower() in METHODS
    }
    documented = {(path, method) for path, method, _op in operations(document)}

    assert routes - documented == set()
    assert {("/v1/agent/desired-state", "get"), ("/v1/agent/status", "post")} <= documented


def test_every_operation_documents_its_errors(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        responses = operation["responses"]
        where = f"{method.upper()} {path}"
        assert {"401", "403"} <= responses.keys(), where
        if "{" in path:
            assert "404" in responses, where
        if "requestBody" in operation or any(
            p.get("in") == "query" for p in operation.get("parameters", [])
        ):
            assert "422" in responses or path.startswith("/v1/agent/"), where
        if method in ("post", "put", "patch", "delete") and not path.startswith("/v1/agent/"):
            assert "409" in responses, where


def test_error_responses_have_the_api_error_shape(document: dict[str, Any]) -> None:
    named = document["components"]["responses"]
    for path, method, operation in operations(document):
        for status, documented in operation["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            ref = documented.get("$ref")
            response = named[ref.rsplit("/", 1)[1]] if ref else documented
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ApiError"}, (method, path, status)
    fields = document["components"]["schemas"]["ApiError"]
    assert set(fields["required"]) == {"error", "message"}


def test_the_agent_endpoints_are_described(document: dict[str, Any]) -> None:
    desired = document["paths"]["/v1/agent/desired-state"]["get"]
    assert {"200", "304"} <= desired["responses"].keys()
    assert "ETag" in desired["responses"]["304"]["headers"]
    assert {p["name"] for p in desired["parameters"]} == {"wait", "If-None-Match"}
    status = document["paths"]["/v1/agent/status"]["post"]
    assert "204" in status["responses"]
    assert "application/json" in status["requestBody"]["content"]


def test_every_list_is_paginated_in_the_document(document: dict[str, Any]) -> None:
    lists = []
    for path, method, operation in operations(document):
        ok = operation["responses"].get("200", {})
        schema = ok.get("content", {}).get("application/json", {}).get("schema", {})
        if method != "get" or schema.get("type") != "array" or path in UNPAGINATED_LISTS:
            continue
        lists.append(path)
        assert "X-Pagination" in ok.get("headers", {}), path
        assert {"page", "page_size"} <= {p["name"] for p in operation["parameters"]}, path
    assert "/v1/services" in lists and "/v1/tokens" in lists


@pytest.fixture
def seeded(database: Database) -> dict[str, int]:
    with database.session_scope() as session:
        session.add(Installation(id=7, account_login="octo"))
        session.add(Repository(id=70, installation_id=7, full_name="octo/hello"))
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="octo/hello", branch="main", host="web-1"
            ),
            "test",
        )
        return {"service_id": service.id, "installation_id": 7}


def test_list_endpoints_answer_with_x_pagination(
    client: FlaskClient,
    document: dict[str, Any],
    admin_headers: dict[str, str],
    seeded: dict[str, int],
) -> None:
    checked = []
    for path, method, operation in operations(document):
        ok = operation["responses"].get("200", {})
        if method != "get" or "X-Pagination" not in ok.get("headers", {}):
            continue
        url = path.format(**seeded)
        response = client.get(url, query_string={"page_size": 1}, headers=admin_headers)

        assert response.status_code == 200, (url, response.json)
        pagination = json.loads(response.headers["X-Pagination"])
        assert len(response.json) == min(1, pagination["total"]), url
        if pagination["total"]:
            assert pagination["page"] == 1, url
        checked.append(path)
    # These have rows here, so the page really is cut to one.
    assert {
        "/v1/services",
        "/v1/tokens",
        "/v1/installations/{installation_id}/repositories",
    } <= set(checked)


def test_swagger_ui_is_served(client: FlaskClient) -> None:
    response = client.get("/v1/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "swagger-ui" in page
    assert "/v1/openapi.json" in page


def test_swagger_ui_works_offline(client: FlaskClient) -> None:
    """The page names no other origin; every script and stylesheet it loads is served here."""
    page = client.get("/v1/docs").get_data(as_text=True)
    assert re.search(r"https?://|//[a-z0-9]", page, re.IGNORECASE) is None
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert {asset.rsplit("/", 1)[-1] for asset in assets} >= {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
    }
    for asset in assets:
        assert asset.startswith("/v1/docs/assets/")
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.get_data()) > 10_000, asset
        expected = "text/css" if asset.endswith(".css") else "text/javascript"
        assert response.mimetype == expected, asset
        response.close()
    assert client.get("/v1/docs/assets/../../openapi.json").status_code == 404
