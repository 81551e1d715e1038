"""A host's snapshot: agents get pull credentials only, and one environment that cannot be
rendered is withheld (status refused, reason given) while every other one is served."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.models import AuditEvent, Environment, Variable
from controlplane.services import (
    catalog,
    composestate,
    deployments,
    generations,
    hosts,
    pushes,
    servicerules,
    variables,
)
from controlplane.settings import Settings

DIGEST = "sha256:" + "2" * 64
GOOD = (
    "services:\n  web:\n    image: 127.0.0.1:5001/o/{name}@" + DIGEST + "\n    expose: ['8080']\n"
)
# Rows written before the policy, or by anything that got around it: never served.
REFUSED = (
    "services:\n  web:\n    image: 127.0.0.1:5001/o/bad@" + DIGEST + "\n"
    "    cap_add: [SYS_MODULE]\n    expose: 80\n"
)
PUSH_PASSWORD = "push-secret-never-on-a-host"
PULL_PASSWORD = "pull-only-secret"


@pytest.fixture
def host_token(database: Database, settings: Settings) -> str:
    with database.session_scope() as session:
        _host, token = hosts.create_host(session, "web-1", "test")
        for name in ("good", "bad", "locked", "allowed"):
            service = catalog.create_service(
                session,
                servicerules.ServiceSpec(
                    name=name, repository=f"o/{name}", branch="main", host="web-1", port=8080
                ),
                "test",
            )
            if name == "allowed":
                service.compose_allow = ["cap_add"]
    return token


def deploy(database: Database, name: str, compose: str) -> None:
    """A recorded deployment of ``compose`` for service ``name``, as stored."""
    with database.session_scope() as session:
        service = next(s for s in catalog.list_services(session) if s.name == name)
        build = pushes.start_build(
            session, service, pushes.production_environment(session, service), "a" * 40, branch="m"
        )
        assert build is not None
        build.images = {"web": {"repository": f"127.0.0.1:5001/o/{name}", "digest": DIGEST}}
        build.compose = compose
        session.flush()
        deployments.record_deployment(session, service.id, build.id, "test")


def snapshot(client: FlaskClient, token: str) -> dict[str, Any]:
    response = client.get("/v1/agent/desired-state", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.json
    body: dict[str, Any] = response.get_json()
    return body


def test_agents_get_pull_credentials_and_never_the_push_password(
    client: FlaskClient, admin_headers: dict[str, str], host_token: str, database: Database
) -> None:
    deploy(database, "good", GOOD.format(name="good"))
    created = client.post(
        "/v1/registries",
        json={
            "address": "127.0.0.1:5000",
            "username": "pusher",
            "password": PUSH_PASSWORD,
            "pull_username": "puller",
            "pull_password": PULL_PASSWORD,
        },
        headers=admin_headers,
    )
    assert created.status_code == 201, created.json
    listed = client.get("/v1/registries", headers=admin_headers).get_data(as_text=True)
    assert PULL_PASSWORD not in listed and PUSH_PASSWORD not in listed
    assert (created.json or {})["has_pull_password"] is True

    body = client.get(
        "/v1/agent/desired-state", headers={"Authorization": f"Bearer {host_token}"}
    ).get_data(as_text=True)
    assert PUSH_PASSWORD not in body and "pusher" not in body
    (environment,) = [e for e in snapshot(client, host_token)["environments"]]
    assert environment["registry"] == {
        "address": "127.0.0.1:5000",
        "username": "puller",
        "password": PULL_PASSWORD,
    }

    # Without pull credentials an agent gets none at all, not the push ones.
    registry_id = (created.json or {})["id"]
    assert client.delete(f"/v1/registries/{registry_id}", headers=admin_headers).status_code == 204
    client.post(
        "/v1/registries",
        json={"address": "127.0.0.1:5000", "username": "pusher", "password": PUSH_PASSWORD},
        headers=admin_headers,
    )
    with database.session_scope() as session:
        generations.bump(session, session.scalar(select(Environment.host_id)) or 0)
    (environment,) = snapshot(client, host_token)["environments"]
    assert environment["registry"] == {
        "address": "127.0.0.1:5000",
        "username": None,
        "password": None,
    }


def test_one_environment_that_cannot_be_rendered_never_costs_the_others_theirs(
    client: FlaskClient, host_token: str, database: Database, settings: Settings
) -> None:
    deploy(database, "good", GOOD.format(name="good"))
    deploy(database, "bad", REFUSED)
    deploy(database, "locked", GOOD.format(name="locked"))
    deploy(
        database,
        "allowed",
        GOOD.format(name="allowed").replace("expose", "cap_add: [NET_ADMIN]\n    expose"),
    )
    with database.session_scope() as session:
        locked = next(s for s in catalog.list_services(session) if s.name == "locked")
        variables.set_variable(
            session, SecretBox.from_settings(settings), locked.id, name="K", value="v", actor="t"
        )
        row = session.scalar(select(Variable).where(Variable.service_id == locked.id))
        assert row is not None
        row.value_encrypted = b"not a fernet token"  # a key lost, a row broken by hand

    state = snapshot(client, host_token)

    served = {e["name"]: e for e in state["environments"]}
    assert sorted(served) == ["allowed", "good"]
    assert served["allowed"]["compose_allow"] == ["cap_add"]
    assert served["good"]["compose_allow"] == []
    withheld = {w["name"]: w["reason"] for w in state["withheld"]}
    assert sorted(withheld) == ["bad", "locked"]
    assert "services.web.cap_add" in withheld["bad"]
    assert "cannot be decrypted" in withheld["locked"]
    with database.session_scope() as session:
        statuses = {
            e.name: (e.status, e.status_reason) for e in session.scalars(select(Environment))
        }
        assert statuses["bad"] == ("refused", withheld["bad"])
        assert statuses["locked"] == ("refused", withheld["locked"])
        assert statuses["good"][0] == "deploying"
        audited = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "environment.refused")
        ).all()
        assert len(audited) == 2

    # Fixed: it is served again and converges like any other deployment.
    with database.session_scope() as session:
        locked_service = next(s for s in catalog.list_services(session) if s.name == "locked")
        variables.set_variable(
            session,
            SecretBox.from_settings(settings),
            locked_service.id,
            name="K",
            value="w",
            actor="t",
        )
        generations.bump(session, locked_service.host_id)
    again = snapshot(client, host_token)
    assert sorted(e["name"] for e in again["environments"]) == ["allowed", "good", "locked"]
    assert [w["name"] for w in again["withheld"]] == ["bad"]
    with database.session_scope() as session:
        locked_env = session.scalar(select(Environment).where(Environment.name == "locked"))
        assert locked_env is not None and (locked_env.status, locked_env.status_reason) == (
            "deploying",
            None,
        )


def test_compose_routes_survive_any_shape() -> None:
    assert composestate.compose_routes(REFUSED, "api", "x.example.com") == ()
    bomb = "a: &a ['x','x','x','x','x','x','x','x','x']\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20)
    )
    assert composestate.compose_routes(bomb, "web", "x.example.com") == ()
    assert composestate.compose_routes("services: [1, 2]", "web", "x.example.com") == ()
