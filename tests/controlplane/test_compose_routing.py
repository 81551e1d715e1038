"""The snapshot routes what the compose file says, never the order images were stored in."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.models import Environment
from controlplane.services import catalog, deployments, hosts, pushes, servicerules

DIGEST = "sha256:" + "3" * 64
REPO = "127.0.0.1:5001/o/shop"
# frontend is named; api is published; db only exposes. PostgreSQL's JSONB returns the
# image map shortest key first (api, db, frontend): storage order would route api.
COMPOSE = f"""\
x-portside:
  route: frontend
services:
  frontend:
    image: {REPO}-frontend@{DIGEST}
    expose: ["3000"]
  api:
    image: {REPO}-api@{DIGEST}
    ports: ["8000"]
  db:
    image: {REPO}-db@{DIGEST}
    expose: ["5432"]
"""


def _deploy(database: Database, compose: str, recorded: str | None) -> str:
    """A host token, and a deployment of ``compose`` whose build recorded ``recorded``."""
    with database.session_scope() as session:
        _host, token = hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="shop",
                repository="o/shop",
                branch="main",
                host="web-1",
                port=3000,
                domain="shop.example.com",
            ),
            "test",
        )
        build = pushes.start_build(
            session, service, pushes.production_environment(session, service), "a" * 40, branch="m"
        )
        assert build is not None
        build.images = {
            name: {"repository": f"{REPO}-{name}", "digest": DIGEST}
            for name in ("frontend", "api", "db")
        }
        build.compose = compose
        build.routed_service = recorded
        session.flush()
        deployments.record_deployment(session, service.id, build.id, "test")
    return token


def _snapshot(client: FlaskClient, token: str) -> dict[str, Any]:
    response = client.get("/v1/agent/desired-state", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.json
    body: dict[str, Any] = response.get_json()
    return body


def test_the_named_service_gets_the_domain_published_ones_a_subdomain_db_nothing(
    client: FlaskClient, database: Database
) -> None:
    token = _deploy(database, COMPOSE, "frontend")

    (environment,) = _snapshot(client, token)["environments"]

    assert environment["routed_service"] == "frontend"
    assert environment["domains"] == ["shop.example.com"]
    assert environment["routes"] == [
        {"service": "api", "port": 8000, "domains": ["api.shop.example.com"]}
    ]


def test_a_recorded_route_the_file_does_not_name_is_withheld(
    client: FlaskClient, database: Database
) -> None:
    token = _deploy(database, COMPOSE, "api")

    state = _snapshot(client, token)

    assert state["environments"] == []
    (withheld,) = state["withheld"]
    assert "the compose file routes 'frontend', the build recorded 'api'" in withheld["reason"]
    with database.session_scope() as session:
        environment = session.scalars(select(Environment)).one()
        assert environment.status == "refused"
