"""Service names that cannot collide with previews, and deleting a service leaves nothing
running: every environment torn down, out of the host's desired state, images doomed."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.errors import ValidationFailed
from controlplane.models import Build, Deployment, Environment, Host
from controlplane.services import catalog, deployments, effects, hosts, pushes, servicerules

DIGEST_PROD = "sha256:" + "1" * 64
DIGEST_PREVIEW = "sha256:" + "2" * 64


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("name", ["web-pr-1", "web-pr-42", "shop-api-pr-007"])
def test_a_service_name_like_a_preview_is_refused_with_422(
    client: FlaskClient, database: Database, admin_headers: dict[str, str], name: str
) -> None:
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
    response = client.post(
        "/v1/services",
        json={"name": name, "repository": "o/hello", "host": "web-1"},
        headers=admin_headers,
    )
    assert response.status_code == 422, response.json
    assert "-pr-<number>" in response.json["details"]["name"][0]


@pytest.mark.parametrize("name", ["web-pr", "pr-1", "web-pr-x", "web-prod-1"])
def test_names_that_only_look_close_are_accepted(database: Database, name: str) -> None:
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        spec = servicerules.ServiceSpec(
            name=name, repository="o/hello", branch="main", host="web-1"
        )
        assert catalog.create_service(session, spec, "test").name == name


def test_the_name_check_is_made_after_normalising(database: Database) -> None:
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        spec = servicerules.ServiceSpec(
            name=" Web-PR-3 ", repository="o/hello", branch="main", host="web-1"
        )
        with pytest.raises(ValidationFailed):
            catalog.create_service(session, spec, "test")


def _deployed(database: Database, service_id: int, environment_id: int, digest: str) -> None:
    with database.session_scope() as session:
        service = catalog.get_service(session, service_id)
        environment = session.get(Environment, environment_id)
        assert environment is not None
        build = pushes.start_build(session, service, environment, "a" * 40, branch="main")
        assert build is not None
        build.images = {"app": {"repository": "127.0.0.1:5001/o/hello", "digest": digest}}
        session.flush()
        deployments.record_deployment(session, service_id, build.id, "test")


def test_deleting_a_service_tears_down_production_and_previews(
    client: FlaskClient, database: Database, admin_headers: dict[str, str]
) -> None:
    with database.session_scope() as session:
        host, host_token = hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="o/hello", branch="main", host="web-1", port=8080
            ),
            "test",
        )
        production = pushes.production_environment(session, service)
        preview = Environment(
            service_id=service.id,
            host_id=host.id,
            name="hello-pr-3",
            kind="preview",
            branch="feature",
            pr_number=3,
        )
        session.add(preview)
        session.flush()
        service_id, host_id = service.id, host.id
        production_id, preview_id = production.id, preview.id
    _deployed(database, service_id, production_id, DIGEST_PROD)
    _deployed(database, service_id, preview_id, DIGEST_PREVIEW)
    with database.session_scope() as session:  # a build still waiting when it is deleted
        service = catalog.get_service(session, service_id)
        environment = session.get(Environment, production_id)
        assert environment is not None
        queued = pushes.start_build(session, service, environment, "b" * 40, branch="main")
        assert queued is not None
        queued_id = queued.id
    before = client.get("/v1/agent/desired-state", headers=auth(host_token))
    assert {e["name"] for e in before.json["environments"]} == {"hello", "hello-pr-3"}
    with database.session_scope() as session:
        generation = session.get(Host, host_id).generation  # type: ignore[union-attr]

    with database.session_scope() as session:
        catalog.delete_service(session, service_id, "test")
        doomed = {
            image["digest"]
            for message in effects.pending(session, effects.Kind.DELETE_IMAGES)
            for image in message.args[0]
        }
    assert doomed == {DIGEST_PROD, DIGEST_PREVIEW}

    after = client.get("/v1/agent/desired-state", headers=auth(host_token))
    assert after.status_code == 200 and after.json["environments"] == []
    with database.session_scope() as session:
        assert session.get(Host, host_id).generation > generation  # type: ignore[union-attr]
        for environment in session.scalars(select(Environment)):
            assert environment.status == "inactive"
            assert environment.current_deployment_id is None
            assert environment.closed_reason == "service deleted"
        assert {d.status for d in session.scalars(select(Deployment))} == {"inactive"}
        assert session.get(Build, queued_id).status == "cancelled"  # type: ignore[union-attr]
    assert client.get(f"/v1/services/{service_id}", headers=admin_headers).status_code == 404


def test_deleting_through_the_api_takes_the_environment_out_of_desired_state(
    client: FlaskClient, database: Database, admin_headers: dict[str, str]
) -> None:
    with database.session_scope() as session:
        _host, host_token = hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="o/hello", branch="main", host="web-1"
            ),
            "test",
        )
        service_id = service.id
        production_id = pushes.production_environment(session, service).id
    _deployed(database, service_id, production_id, DIGEST_PROD)
    assert client.get("/v1/agent/desired-state", headers=auth(host_token)).json["environments"]
    deleted = client.delete(f"/v1/services/{service_id}", headers=admin_headers)
    assert deleted.status_code == 204
    after = client.get("/v1/agent/desired-state", headers=auth(host_token))
    assert after.json["environments"] == []


def test_a_deleted_services_name_can_be_taken_again(database: Database) -> None:
    """Deleting ``hello`` and creating ``hello`` again used to fail: the deleted service
    and its environments kept their names, which are unique."""
    spec = servicerules.ServiceSpec(name="hello", repository="o/hello", branch="main", host="web-1")
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        old = catalog.create_service(session, spec, "test")
        session.add(
            Environment(
                service_id=old.id,
                host_id=old.host_id,
                name="hello-pr-1",
                kind="preview",
                branch="feature",
                pr_number=1,
            )
        )
        session.flush()
        old_id = old.id
        catalog.delete_service(session, old_id, "test")

    with database.session_scope() as session:
        new = catalog.create_service(session, spec, "test")
        session.add(
            Environment(
                service_id=new.id,
                host_id=new.host_id,
                name="hello-pr-1",
                kind="preview",
                branch="feature",
                pr_number=1,
            )
        )
        session.flush()
        names = {(env.service_id, env.name) for env in session.scalars(select(Environment))}
        assert names == {
            (old_id, f"hello~{old_id}"),
            (old_id, f"hello-pr-1~{old_id}"),
            (new.id, "hello"),
            (new.id, "hello-pr-1"),
        }
        assert new.name == "hello" and new.id != old_id
