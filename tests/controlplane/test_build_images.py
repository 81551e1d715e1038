"""Builds and deployments show the images they pushed and run, with digests, in the order
of the build's compose file (PostgreSQL keeps the JSON object's keys shortest first): in
the API, the ``portside`` command and the dashboard's build page."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient

from controlplane.db import Database
from controlplane.models import Build, Deployment, Environment, utcnow
from tests.controlplane.test_cli_client import (
    Cli,
    admin,
    api_env,
    live,
    new_build,
    reader,
    service_id,
)
from tests.dashboard.test_dashboard import log_in, make_token

__all__ = ["admin", "api_env", "live", "reader", "service_id"]  # fixtures, used by name

REGISTRY = "127.0.0.1:5001/codertocat/hello-world"
COMPOSE = """\
services:
  frontend:
    image: {registry}-frontend@{frontend}
  api:
    image: {registry}-api@{api}
  db:
    image: postgres:16
"""
SERVICES = ("frontend", "api", "db")


def digest(service: str) -> str:
    return "sha256:" + f"{ord(service[0]):02x}" * 32


@dataclass
class Deployed:
    build_id: int
    deployment_id: int
    environment_id: int


@pytest.fixture
def deployed(database: Database, service_id: int) -> Deployed:
    """A succeeded compose build of three services, the active deployment of production."""
    build_id = new_build(database, service_id, status="succeeded")
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        build.images = {
            name: {
                "repository": f"{REGISTRY}-{name}",
                "tag": f"main-{name}",
                "digest": digest(name),
            }
            for name in SERVICES
        }
        build.compose = COMPOSE.format(
            registry=REGISTRY, frontend=digest("frontend"), api=digest("api")
        )
        environment = session.get(Environment, build.environment_id)
        assert environment is not None
        deployment = Deployment(
            environment_id=environment.id, build_id=build_id, status="active", activated_at=utcnow()
        )
        session.add(deployment)
        session.flush()
        environment.current_deployment_id = deployment.id
        return Deployed(build_id, deployment.id, environment.id)


def expected() -> list[dict[str, str]]:
    return [
        {
            "service": name,
            "repository": f"{REGISTRY}-{name}",
            "tag": f"main-{name}",
            "digest": digest(name),
            "reference": f"{REGISTRY}-{name}@{digest(name)}",
        }
        for name in SERVICES
    ]


def test_the_api_shows_images_with_digests_in_compose_order(
    client: FlaskClient,
    database: Database,
    read_headers: dict[str, str],
    deployed: Deployed,
    service_id: int,
) -> None:
    with database.session_scope() as session:
        build = session.get(Build, deployed.build_id)
        assert build is not None
        assert list(build.images) != list(SERVICES)  # as stored: the file's order is lost

    detail = client.get(f"/v1/builds/{deployed.build_id}", headers=read_headers)
    listed = client.get("/v1/builds", headers=read_headers)
    deployments = client.get(f"/v1/services/{service_id}/deployments", headers=read_headers)
    environment = client.get(f"/v1/environments/{deployed.environment_id}", headers=read_headers)

    assert detail.status_code == 200, detail.json
    assert detail.json["images"] == expected()
    assert [b["images"] for b in listed.json] == [expected()]
    (deployment,) = deployments.json
    assert deployment["id"] == deployed.deployment_id and deployment["images"] == expected()
    assert environment.json["current_deployment"]["images"] == expected()


def test_a_build_without_images_lists_none_and_one_container_is_app(
    client: FlaskClient, database: Database, read_headers: dict[str, str], service_id: int
) -> None:
    queued = new_build(database, service_id)
    single = new_build(database, service_id, status="succeeded")
    with database.session_scope() as session:
        build = session.get(Build, single)
        assert build is not None
        build.images = {"app": {"repository": REGISTRY, "tag": "main", "digest": digest("app")}}

    assert client.get(f"/v1/builds/{queued}", headers=read_headers).json["images"] == []
    (image,) = client.get(f"/v1/builds/{single}", headers=read_headers).json["images"]
    assert image["service"] == "app" and image["reference"] == f"{REGISTRY}@{digest('app')}"


def test_the_openapi_document_describes_the_images(client: FlaskClient) -> None:
    schemas = client.get("/v1/openapi.json").json["components"]["schemas"]
    for name in ("Build", "BuildDetail", "Deployment", "CurrentDeployment"):
        images = schemas[name]["properties"]["images"]
        assert images["type"] == "array" and images["readOnly"] is True, name
        assert images["items"] == {"$ref": "#/components/schemas/BuildImage"}, name
    assert set(schemas["BuildImage"]["properties"]) == {
        "service",
        "repository",
        "tag",
        "digest",
        "reference",
    }


def test_the_cli_lists_and_shows_images_with_digests(reader: Cli, deployed: Deployed) -> None:
    listed = reader("builds", "list", "--json")
    assert listed.code == 0, listed
    assert [b["images"] for b in json.loads(listed.stdout)] == [expected()]

    shown = reader("builds", "show", str(deployed.build_id))

    assert shown.code == 0, shown
    lines = shown.stdout_lines
    assert lines[0].split() == ["id", str(deployed.build_id)]
    assert "service   hello" in lines[1]
    header = lines.index(next(line for line in lines if line.startswith("SERVICE")))
    assert lines[header].split() == ["SERVICE", "REFERENCE", "TAG"]
    assert [line.split() for line in lines[header + 1 :]] == [
        [name, f"{REGISTRY}-{name}@{digest(name)}", f"main-{name}"] for name in SERVICES
    ]
    as_json = json.loads(reader("builds", "show", str(deployed.build_id), "--json").stdout)
    assert as_json["images"] == expected() and as_json["steps"]
    missing = reader("builds", "show", "999999")
    assert missing.code == 3 and "999999" in missing.stderr


def test_the_dashboard_build_page_shows_images_with_digests(
    client: FlaskClient, database: Database, deployed: Deployed
) -> None:
    assert log_in(client, make_token(database, "read")).status_code == 302

    html = client.get(f"/builds/{deployed.build_id}").text

    items = re.findall(
        r'<li data-service="([^"]+)">.*?<code class="reference">([^<]+)</code>', html
    )
    assert items == [(name, f"{REGISTRY}-{name}@{digest(name)}") for name in SERVICES]
    assert "<code>main-frontend</code>" in html
