"""The agents' API: snapshots by generation, 304 from Redis, long polls, status reports."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.models import ApiToken, Deployment, Environment
from controlplane.services import catalog, deployments, hosts, pushes, servicerules, variables
from controlplane.settings import Settings

DIGEST = "sha256:" + "1" * 64


@pytest.fixture
def host_token(database: Database, settings: Settings) -> str:
    with database.session_scope() as session:
        _host, token = hosts.create_host(session, "web-1", "test")
        hosts.create_host(session, "web-2", "test")
        service = catalog.create_service(
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
        variables.set_variable(
            session,
            SecretBox.from_settings(settings),
            service.id,
            name="API_KEY",
            value="s3cret-value",
            actor="test",
        )
    return token


def deploy(database: Database, sha: str) -> int:
    """A build of ``sha`` that went through the pipeline and was recorded."""
    with database.session_scope() as session:
        service = catalog.list_services(session)[0]
        build = pushes.start_build(
            session, service, pushes.production_environment(session, service), sha, branch="main"
        )
        assert build is not None
        build.images = {
            "app": {"repository": "127.0.0.1:5001/o/hello", "tag": sha[:12], "digest": DIGEST}
        }
        session.flush()
        return deployments.record_deployment(session, service.id, build.id, "test").id


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_snapshot_etag_and_304(client: FlaskClient, host_token: str, database: Database) -> None:
    first = client.get("/v1/agent/desired-state", headers=auth(host_token))
    assert first.status_code == 200
    assert first.json["environments"] == [] and first.json["complete"] is True
    etag = first.headers["ETag"]
    again = client.get(
        "/v1/agent/desired-state", headers={**auth(host_token), "If-None-Match": etag}
    )
    assert again.status_code == 304
    deployment_id = deploy(database, "a" * 40)
    changed = client.get(
        "/v1/agent/desired-state", headers={**auth(host_token), "If-None-Match": etag}
    )
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    (environment,) = changed.json["environments"]
    assert environment["deployment_id"] == deployment_id
    assert environment["image"] == f"127.0.0.1:5001/o/hello@{DIGEST}"
    assert environment["env"] == {"API_KEY": "s3cret-value"}
    assert environment["domains"] == ["hello.example.com"] and environment["port"] == 8080


def test_304_does_not_touch_the_database(app: Flask, client: FlaskClient, host_token: str) -> None:
    etag = client.get("/v1/agent/desired-state", headers=auth(host_token)).headers["ETag"]
    statements: list[str] = []
    engine = app.extensions["portside.db"].engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for _ in range(5):
            response = client.get(
                "/v1/agent/desired-state", headers={**auth(host_token), "If-None-Match": etag}
            )
            assert response.status_code == 304
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert statements == []


def test_long_poll_wakes_up_on_a_new_deployment(
    app: Flask, host_token: str, database: Database
) -> None:
    client = app.test_client()
    etag = client.get("/v1/agent/desired-state", headers=auth(host_token)).headers["ETag"]
    answers: list[Any] = []

    def poll() -> None:
        answers.append(
            app.test_client().get(
                "/v1/agent/desired-state?wait=60",
                headers={**auth(host_token), "If-None-Match": etag},
            )
        )

    poller = threading.Thread(target=poll)
    poller.start()
    poller.join(1)
    assert poller.is_alive()  # held, not answered
    deploy(database, "b" * 40)
    poller.join()
    assert answers[0].status_code == 200 and answers[0].json["environments"]


def test_host_tokens_see_only_their_own_state(
    client: FlaskClient, host_token: str, admin_headers: dict[str, str], database: Database
) -> None:
    deploy(database, "c" * 40)
    with database.session_scope() as session:
        _host, other = hosts.create_host(session, "web-3", "test")
    assert client.get("/v1/agent/desired-state", headers=auth(other)).json["environments"] == []
    assert client.get("/v1/agent/desired-state", headers=admin_headers).status_code == 403
    assert client.get("/v1/agent/desired-state").status_code == 401
    assert client.get("/v1/services", headers=auth(host_token)).status_code == 403


def report(client: FlaskClient, token: str, deployment_id: int, **item: Any) -> int:
    body = {
        "generation": 1,
        "agent_version": "test",
        "environments": [{"name": "hello", "deployment_id": deployment_id, **item}],
    }
    return client.post("/v1/agent/status", json=body, headers=auth(token)).status_code


def test_status_activates_supersedes_and_fails_back(
    client: FlaskClient,
    host_token: str,
    database: Database,
    db_session: Session,
    read_headers: dict[str, str],
) -> None:
    first = deploy(database, "d" * 40)
    assert (
        report(client, host_token, first, state="running", healthy=True, address="127.0.0.1:4000")
        == 204
    )
    second = deploy(database, "e" * 40)
    assert report(client, host_token, second, state="running", healthy=True) == 204
    db_session.expire_all()
    statuses = dict(db_session.execute(select(Deployment.id, Deployment.status)).all())
    assert statuses == {first: "superseded", second: "active"}

    third = deploy(database, "f" * 40)
    assert (
        report(client, host_token, third, state="failed", error="exited with 1", logs="boom") == 204
    )
    db_session.expire_all()
    broken = db_session.get(Deployment, third)
    assert broken is not None and broken.status == "failed" and "boom" in (broken.error or "")
    environment = db_session.scalar(select(Environment))
    assert environment is not None and environment.current_deployment_id == second
    listed = client.get("/v1/environments", headers=read_headers).json
    assert listed[0]["address"] == "127.0.0.1:4000"
    assert listed[0]["current_deployment"]["id"] == second
    hosts_listed = client.get("/v1/hosts", headers=read_headers).json
    web1 = next(h for h in hosts_listed if h["name"] == "web-1")
    assert web1["online"] is True and web1["agent_version"] == "test"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body must be an object"),
        ({"environments": []}, "generation has the wrong type"),
        ({"generation": 1, "environments": {}}, "environments must be a list"),
        (
            {"generation": 1, "environments": [{"name": "hello", "state": "sleeping"}]},
            "environments[0].state must be one of",
        ),
        (
            {
                "generation": 1,
                "environments": [{"name": "hello", "state": "running", "containers": [{}]}],
            },
            "environments[0].containers[0].id",
        ),
    ],
)
def test_a_report_off_the_contract_is_refused_naming_the_field(
    client: FlaskClient, host_token: str, database: Database, body: object, field: str
) -> None:
    deployment_id = deploy(database, "a" * 40)
    response = client.post("/v1/agent/status", json=body, headers=auth(host_token))
    assert response.status_code == 400
    assert field in response.json["message"]
    with database.session_scope() as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None and deployment.status == "pending"


def test_rollback_to_an_earlier_deployment(
    client: FlaskClient, host_token: str, database: Database, admin_headers: dict[str, str]
) -> None:
    first = deploy(database, "1" * 40)
    report(client, host_token, first, state="running", healthy=True)
    second = deploy(database, "2" * 40)
    report(client, host_token, second, state="running", healthy=True)
    environment_id = client.get("/v1/environments", headers=admin_headers).json[0]["id"]
    response = client.post(
        f"/v1/environments/{environment_id}/rollback", json={}, headers=admin_headers
    )
    assert response.status_code == 202 and response.json["id"] == first
    state = client.get("/v1/agent/desired-state", headers=auth(host_token)).json
    assert state["environments"][0]["deployment_id"] == first


def test_a_revoked_host_token_is_refused_at_once(
    client: FlaskClient, host_token: str, admin_headers: dict[str, str], db_session: Session
) -> None:
    assert client.get("/v1/agent/desired-state", headers=auth(host_token)).status_code == 200
    public_id = host_token.split("_")[1]
    token_id = db_session.scalar(select(ApiToken.id).where(ApiToken.public_id == public_id))
    assert client.delete(f"/v1/tokens/{token_id}", headers=admin_headers).status_code == 204
    assert client.get("/v1/agent/desired-state", headers=auth(host_token)).status_code == 401


def test_an_exhausted_connection_pool_is_a_retryable_503(
    app: Flask, client: FlaskClient, host_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storm of snapshot requests that outlasts the pool's wait answers 503 (agents back
    off and ask again), not an internal error."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    def exhausted(*_args: object, **_kwargs: object) -> None:
        raise PoolTimeout("QueuePool limit reached")

    monkeypatch.setattr("controlplane.api.agent.snapshots.snapshot", exhausted)
    response = client.get("/v1/agent/desired-state", headers=auth(host_token))
    assert (response.status_code, response.json["error"]) == (503, "unavailable")
