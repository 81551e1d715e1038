"""Replicas and several hosts on the control plane: validation, each host's share in its
snapshot and generation, and one status for an environment that several agents report."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.models import Deployment, Environment, Host
from controlplane.services import catalog, hosts, placements, servicerules
from tests.controlplane.test_agent_api import auth, deploy


@pytest.fixture
def tokens(database: Database) -> dict[str, str]:
    """Agent tokens of web-1 (the service's host), web-2, web-3 and an untrusted host."""
    with database.session_scope() as session:
        made = {name: hosts.create_host(session, name, "test")[1] for name in ("web-1", "web-2")}
        made["web-3"] = hosts.create_host(session, "web-3", "test")[1]
        hosts.create_host(session, "forks", "test", untrusted=True)
        catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello",
                repository="o/hello",
                branch="main",
                host="web-1",
                port=8080,
                domain="hello.example.com",
            ),
            "test",
        )
    return made


def generations(database: Database) -> dict[str, int]:
    with database.session_scope() as session:
        return {host.name: host.generation for host in session.scalars(select(Host))}


def snapshot(client: FlaskClient, token: str) -> list[dict[str, Any]]:
    response = client.get("/v1/agent/desired-state", headers=auth(token))
    assert response.status_code == 200, response.json
    environments: list[dict[str, Any]] = response.json["environments"]
    return environments


def patch(client: FlaskClient, headers: dict[str, str], body: dict[str, Any]) -> Any:
    return client.patch("/v1/services/1", json=body, headers=headers)


def report(
    client: FlaskClient,
    token: str,
    deployment_id: int,
    state: str = "running",
    address: str = "127.0.0.1:9999",
) -> None:
    body = {
        "generation": 1,
        "environments": [
            {
                "name": "hello",
                "deployment_id": deployment_id,
                "state": state,
                "healthy": state == "running",
                "address": address,
                "error": None if state == "running" else "replica 2 never got healthy",
            }
        ],
    }
    response = client.post("/v1/agent/status", json=body, headers=auth(token))
    assert response.status_code == 204, response.json


def status(database: Database, deployment_id: int) -> tuple[str, str, int | None]:
    with database.session_scope() as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        environment = deployment.environment
        return deployment.status, environment.status, environment.current_deployment_id


def test_each_host_gets_its_share_and_a_new_generation_when_it_changes(
    client: FlaskClient, tokens: dict[str, str], admin_headers: dict[str, str], database: Database
) -> None:
    deploy(database, "a" * 40)
    assert "replicas" not in snapshot(client, tokens["web-1"])[0]  # one replica, as before
    before = generations(database)

    response = patch(client, admin_headers, {"replicas": 2, "hosts": ["web-1", "web-2"]})
    assert response.status_code == 200, response.json
    assert response.json["hosts"] == ["web-1", "web-2"] and response.json["replicas"] == 2
    after = generations(database)
    assert after["web-1"] > before["web-1"] and after["web-2"] > before["web-2"]
    assert after["web-3"] == before["web-3"]
    for name in ("web-1", "web-2"):
        (environment,) = snapshot(client, tokens[name])
        assert environment["name"] == "hello" and environment["replicas"] == 2
    assert snapshot(client, tokens["web-3"]) == []

    # Only the replica count: both hosts' shares change.
    response = patch(client, admin_headers, {"replicas": 3})
    assert response.status_code == 200 and response.json["hosts"] == ["web-1", "web-2"]
    again = generations(database)
    assert again["web-1"] > after["web-1"] and again["web-2"] > after["web-2"]

    # web-2 leaves: its state is empty, web-1's share is unchanged and not bumped.
    response = patch(client, admin_headers, {"hosts": ["web-1"]})
    assert response.status_code == 200 and response.json["hosts"] == ["web-1"]
    last = generations(database)
    assert last["web-2"] > again["web-2"] and last["web-1"] == again["web-1"]
    assert snapshot(client, tokens["web-2"]) == []
    assert snapshot(client, tokens["web-1"])[0]["replicas"] == 3

    # A new first host takes the production environment with it.
    response = patch(client, admin_headers, {"hosts": ["web-3"], "replicas": 1})
    assert response.status_code == 200 and response.json["host"] == "web-3"
    assert snapshot(client, tokens["web-1"]) == []
    (moved,) = snapshot(client, tokens["web-3"])
    assert "replicas" not in moved


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"hosts": ["web-1", "nowhere"]}, "hosts", "no host named nowhere"),
        ({"hosts": ["web-1", "web-1"]}, "hosts", "each host once"),
        ({"hosts": []}, "hosts", "Shorter than minimum length 1."),
        ({"hosts": ["web-1", "forks"]}, "host", "an untrusted host takes no production"),
        ({"replicas": 0}, "replicas", "Must be greater than or equal to 1"),
        ({"replicas": 21}, "replicas", "less than or equal to 20"),
    ],
)
def test_bad_placements_are_refused(
    client: FlaskClient,
    tokens: dict[str, str],
    admin_headers: dict[str, str],
    database: Database,
    body: dict[str, Any],
    field: str,
    message: str,
) -> None:
    before = generations(database)
    response = patch(client, admin_headers, body)
    assert response.status_code == 422, response.json
    assert message in str(response.json), response.json
    assert field in str(response.json)
    assert generations(database) == before
    shown = client.get("/v1/services/1", headers=admin_headers).json
    assert shown["hosts"] == ["web-1"] and shown["replicas"] == 1


def test_a_service_is_created_on_several_hosts(
    client: FlaskClient, tokens: dict[str, str], admin_headers: dict[str, str]
) -> None:
    body = {"name": "two", "repository": "o/two", "port": 8080, "replicas": 2}
    created = client.post(
        "/v1/services", json={**body, "hosts": ["web-2", "web-3"]}, headers=admin_headers
    )
    assert created.status_code == 201, created.json
    assert created.json["host"] == "web-2" and created.json["hosts"] == ["web-2", "web-3"]
    assert created.json["replicas"] == 2
    clash = client.post(
        "/v1/services",
        json={**body, "name": "three", "host": "web-1", "hosts": ["web-2"]},
        headers=admin_headers,
    )
    assert clash.status_code == 422 and "must start with web-1" in str(clash.json)
    nowhere = client.post("/v1/services", json={**body, "name": "four"}, headers=admin_headers)
    assert nowhere.status_code == 422 and "give host or hosts" in str(nowhere.json)


def test_previews_stay_on_their_own_host(
    client: FlaskClient, tokens: dict[str, str], admin_headers: dict[str, str], database: Database
) -> None:
    assert patch(client, admin_headers, {"hosts": ["web-1", "web-2"]}).status_code == 200
    with database.session_scope() as session:
        production = session.scalar(select(Environment).where(Environment.name == "hello"))
        assert production is not None
        session.add(
            Environment(
                service_id=production.service_id,
                host_id=production.host_id,
                name="hello-pr-1",
                kind="preview",
                branch="feature",
                pr_number=1,
            )
        )
        session.flush()
        preview = session.scalar(select(Environment).where(Environment.name == "hello-pr-1"))
        assert preview is not None
        web2 = session.scalar(select(Host).where(Host.name == "web-2"))
        assert web2 is not None
        assert placements.host_ids(production) == [production.host_id, web2.id]
        assert placements.host_ids(preview) == [production.host_id]
        assert placements.replicas_for(preview) == 1
        on_web2 = session.scalars(select(Environment.name).where(placements.placed_on(web2.id)))
        assert list(on_web2) == ["hello"]


def test_an_environment_is_running_once_every_host_reports_it(
    client: FlaskClient, tokens: dict[str, str], admin_headers: dict[str, str], database: Database
) -> None:
    assert patch(client, admin_headers, {"replicas": 2, "hosts": ["web-1", "web-2"]}).status_code
    first = deploy(database, "a" * 40)
    report(client, tokens["web-1"], first)
    assert status(database, first) == ("pending", "deploying", first)
    # The last host to report makes it active; the address is still the first host's.
    report(client, tokens["web-2"], first, address="127.0.0.2:9999")
    assert status(database, first) == ("active", "running", first)
    with database.session_scope() as session:
        production = session.scalar(select(Environment).where(Environment.name == "hello"))
        assert production is not None and production.address == "127.0.0.1:9999"

    # A host outside the environment's placement reports it: ignored.
    second = deploy(database, "b" * 40)
    report(client, tokens["web-3"], second)
    report(client, tokens["web-1"], second)
    assert status(database, second) == ("pending", "deploying", second)

    # It fails on one host: failed, and every host goes back to the first deployment.
    before = generations(database)
    report(client, tokens["web-2"], second, state="failed")
    assert status(database, second)[0] == "failed"
    assert status(database, first) == ("active", "running", first)
    after = generations(database)
    assert after["web-1"] > before["web-1"] and after["web-2"] > before["web-2"]
    assert after["web-3"] == before["web-3"]
    for name in ("web-1", "web-2"):
        assert snapshot(client, tokens[name])[0]["deployment_id"] == first


def test_changes_to_a_spread_environment_reach_every_host(
    client: FlaskClient, tokens: dict[str, str], admin_headers: dict[str, str], database: Database
) -> None:
    """A production log driver, and a staging environment's creation and teardown."""
    assert patch(client, admin_headers, {"hosts": ["web-1", "web-2"]}).status_code == 200
    deploy(database, "a" * 40)
    before = generations(database)
    driver = {"production": {"driver": "syslog", "options": {"syslog-address": "udp://h:514"}}}
    assert patch(client, admin_headers, {"log_driver": driver}).status_code == 200
    after = generations(database)
    assert after["web-1"] > before["web-1"] and after["web-2"] > before["web-2"]
    assert after["web-3"] == before["web-3"]
    for name in ("web-1", "web-2"):
        assert snapshot(client, tokens[name])[0]["log_driver"]["driver"] == "syslog"

    staging = client.post(
        "/v1/services/1/environments",
        json={"name": "staging", "branch": "develop"},
        headers=admin_headers,
    )
    assert staging.status_code == 201, staging.json
    before = generations(database)
    gone = client.delete(f"/v1/environments/{staging.json['id']}", headers=admin_headers)
    assert gone.status_code == 204, gone.json
    after = generations(database)
    assert after["web-1"] > before["web-1"] and after["web-2"] > before["web-2"]


def test_a_spread_environment_says_which_hosts_it_waits_for(
    client: FlaskClient, tokens: dict[str, str], admin_headers: dict[str, str], database: Database
) -> None:
    assert patch(client, admin_headers, {"hosts": ["web-1", "web-2"]}).status_code == 200
    first = deploy(database, "a" * 40)

    def reason() -> str:
        listed = client.get("/v1/environments", headers=admin_headers).json
        (production,) = [env for env in listed if env["name"] == "hello"]
        return str(production["pending_reason"])

    assert reason() == "no agent online for host web-1; no agent online for host web-2"
    report(client, tokens["web-1"], first)
    assert reason() == "no agent online for host web-2"
    report(client, tokens["web-2"], first, state="starting")
    assert reason() == f"waiting for host web-2's agent to run deployment #{first}"
