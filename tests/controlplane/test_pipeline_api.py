"""The control plane's side of the pipeline, through the API a build worker uses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.steps import STEPS, Step
from controlplane.db import Database
from controlplane.models import Build, Environment, Host, Variable
from controlplane.services import catalog, hosts, pushes, servicerules, tokens

SHA_A = "a" * 40
SHA_B = "b" * 40
DIGEST = "sha256:" + "0" * 64


@pytest.fixture
def service_id(database: Database) -> int:
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="o/hello", branch="main", host="web-1"
            ),
            "test",
        )
        return service.id


def new_build(database: Database, service_id: int, sha: str, pushed: int) -> int:
    with database.session_scope() as session:
        service = catalog.get_service(session, service_id)
        build = pushes.start_build(
            session,
            service,
            pushes.production_environment(session, service),
            sha,
            branch="main",
            pushed_at=dt.datetime.fromtimestamp(pushed, dt.UTC),
        )
        assert build is not None
        session.flush()
        return build.id


def run_steps(client: FlaskClient, headers: dict[str, str], build_id: int) -> dict[str, Any]:
    """Claim and finish clone, build and push, then upload artifacts, as a worker does."""
    spec: dict[str, Any] = {}
    for step in ("clone", "build", "push", "upload_compose"):
        claimed = client.post(
            f"/v1/builds/{build_id}/steps/{step}/claim",
            json={"attempt": 1, "worker": "build-1@test"},
            headers=headers,
        )
        assert claimed.status_code == 200, claimed.json
        spec = claimed.json
        if step == "upload_compose":
            uploaded = client.post(
                f"/v1/builds/{build_id}/artifacts",
                json={
                    "attempt": 1,
                    "images": {
                        "app": {
                            "repository": "127.0.0.1:5000/o/hello",
                            "tag": "x",
                            "digest": DIGEST,
                        }
                    },
                    "compose": None,
                },
                headers=headers,
            )
            assert uploaded.status_code == 204, uploaded.json
        finished = client.post(
            f"/v1/builds/{build_id}/steps/{step}/finish",
            json={"attempt": 1, "status": "succeeded"},
            headers=headers,
        )
        assert finished.status_code == 204, finished.json
    return spec


def deploy(client: FlaskClient, headers: dict[str, str], service_id: int, build_id: int) -> Any:
    return client.post(
        f"/v1/services/{service_id}/deployments", json={"build_id": build_id}, headers=headers
    )


def test_steps_run_in_order_once(
    client: FlaskClient, worker_headers: dict[str, str], database: Database, service_id: int
) -> None:
    build_id = new_build(database, service_id, SHA_A, 1)
    early = client.post(
        f"/v1/builds/{build_id}/steps/push/claim",
        json={"attempt": 1, "worker": "w"},
        headers=worker_headers,
    )
    assert early.status_code == 409
    spec = run_steps(client, worker_headers, build_id)
    assert spec["commit_sha"] == SHA_A and spec["service"] == "hello"
    again = client.post(
        f"/v1/builds/{build_id}/steps/clone/claim",
        json={"attempt": 1, "worker": "w"},
        headers=worker_headers,
    )
    assert again.status_code == 409 and "already succeeded" in again.json["message"]


def test_deployments_of_an_older_commit_never_replace_a_newer_one(
    client: FlaskClient,
    worker_headers: dict[str, str],
    read_headers: dict[str, str],
    database: Database,
    db_session: Session,
    service_id: int,
) -> None:
    older = new_build(database, service_id, SHA_A, 100)
    newer = new_build(database, service_id, SHA_B, 200)
    run_steps(client, worker_headers, newer)
    run_steps(client, worker_headers, older)
    host_generation = db_session.scalar(select(Host.generation))
    assert deploy(client, worker_headers, service_id, newer).status_code == 201
    late = deploy(client, worker_headers, service_id, older)
    assert late.status_code == 201 and late.json["status"] == "superseded"
    # Recording the same deployment twice changes nothing.
    assert deploy(client, worker_headers, service_id, newer).json["status"] == "pending"
    db_session.expire_all()
    environment = db_session.scalar(select(Environment))
    assert environment is not None and environment.current_deployment is not None
    assert environment.current_deployment.build.commit_sha == SHA_B
    assert db_session.scalar(select(Host.generation)) == (host_generation or 0) + 1
    listed = client.get(f"/v1/services/{service_id}/deployments", headers=read_headers).json
    assert [(d["commit_sha"], d["status"]) for d in listed] == [
        (SHA_A, "superseded"),
        (SHA_B, "pending"),
    ]
    statuses = {b.id: b.status for b in db_session.scalars(select(Build))}
    assert statuses == {older: "superseded", newer: "succeeded"}


def test_each_finish_claims_the_next_step_and_the_last_one_deploys(
    client: FlaskClient, worker_headers: dict[str, str], database: Database, service_id: int
) -> None:
    """The worker's protocol: one exchange per step boundary; upload_compose's finish
    carries its artifacts, and record_deployment's finish records the deployment."""
    build_id = new_build(database, service_id, SHA_A, 1)
    worker = {"attempt": 1, "status": "succeeded", "worker": "build-1@test"}
    claimed = client.post(
        f"/v1/builds/{build_id}/steps/clone/claim",
        json={"attempt": 1, "worker": "build-1@test"},
        headers=worker_headers,
    )
    assert claimed.status_code == 200 and claimed.json["step"] == "clone"
    artifacts = {
        "images": {"app": {"repository": "127.0.0.1:5000/o/hello", "tag": "x", "digest": DIGEST}},
        "compose": None,
    }
    for step in STEPS[:-1]:
        body = {**worker, "artifacts": artifacts} if step is Step.UPLOAD_COMPOSE else worker
        finished = client.post(
            f"/v1/builds/{build_id}/steps/{step}/finish", json=body, headers=worker_headers
        )
        assert finished.status_code == 200, finished.json
        assert finished.json["next"]["step"] == step.next
        assert finished.json["next"]["commit_sha"] == SHA_A
        assert ("registry_auth" in finished.json["next"]) and finished.json["deployment"] is None
    last = client.post(
        f"/v1/builds/{build_id}/steps/record_deployment/finish", json=worker, headers=worker_headers
    )
    assert last.status_code == 200, last.json
    assert last.json["next"] is None
    assert last.json["deployment"]["id"] is not None
    assert last.json["deployment"]["status"] == "pending"
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None and build.status == "succeeded"
        assert [step.status for step in build.steps] == ["succeeded"] * len(STEPS)
        assert build.images["app"]["digest"] == DIGEST
        environment = build.environment
        assert environment.current_deployment is not None
        assert environment.current_deployment.build_id == build_id
    again = client.post(
        f"/v1/builds/{build_id}/steps/push/finish", json=worker, headers=worker_headers
    )
    # A repeated report (a redelivered message) changes nothing and claims nothing.
    assert again.status_code == 200 and again.json["next"] is None


def test_a_failed_step_fails_the_build_with_its_error(
    client: FlaskClient,
    worker_headers: dict[str, str],
    read_headers: dict[str, str],
    database: Database,
    service_id: int,
) -> None:
    build_id = new_build(database, service_id, SHA_A, 1)
    client.post(
        f"/v1/builds/{build_id}/steps/clone/claim",
        json={"attempt": 1, "worker": "w"},
        headers=worker_headers,
    )
    client.post(
        f"/v1/builds/{build_id}/steps/clone/finish",
        json={"attempt": 1, "status": "failed", "error": "commit aaaaaaa not found"},
        headers=worker_headers,
    )
    detail = client.get(f"/v1/builds/{build_id}", headers=read_headers).json
    assert detail["status"] == "failed" and detail["error"] == "commit aaaaaaa not found"
    assert [s["status"] for s in detail["steps"]] == [
        "failed",
        "skipped",
        "skipped",
        "skipped",
        "skipped",
    ]


def test_artifacts_need_digests(
    client: FlaskClient, worker_headers: dict[str, str], database: Database, service_id: int
) -> None:
    build_id = new_build(database, service_id, SHA_A, 1)
    claimed = client.post(
        f"/v1/builds/{build_id}/steps/clone/claim",
        json={"attempt": 1, "worker": "build-1@test"},
        headers=worker_headers,
    )
    assert claimed.status_code == 200, claimed.json
    response = client.post(
        f"/v1/builds/{build_id}/artifacts",
        json={"attempt": 1, "images": {"app": {"repository": "r", "tag": "t", "digest": "x"}}},
        headers=worker_headers,
    )
    assert response.status_code == 422


def test_only_the_worker_holding_a_build_uploads_its_artifacts_or_deploys_it(
    client: FlaskClient, worker_headers: dict[str, str], database: Database, service_id: int
) -> None:
    """Another worker token (a fork's lane, say) may neither plant a compose file in a
    build it does not hold, nor fail it with a bad upload, nor deploy it."""
    with database.session_scope() as session:
        _row, secret = tokens.create_token(session, "fork-worker", "worker", builds="untrusted")
    stranger = {"Authorization": f"Bearer {secret}"}
    build_id = new_build(database, service_id, SHA_A, 1)
    claimed = client.post(
        f"/v1/builds/{build_id}/steps/clone/claim",
        json={"attempt": 1, "worker": "build-1@test"},
        headers=worker_headers,
    )
    assert claimed.status_code == 200, claimed.json
    image = {"repository": "127.0.0.1:5000/o/hello", "tag": "x", "digest": DIGEST}
    planted = client.post(
        f"/v1/builds/{build_id}/artifacts",
        json={"attempt": 1, "images": {"app": image}, "compose": "services: {}"},
        headers=stranger,
    )
    assert planted.status_code == 403, planted.json
    failing = client.post(
        f"/v1/builds/{build_id}/artifacts",
        json={"attempt": 1, "images": {"app": {**image, "digest": "x"}}},
        headers=stranger,
    )
    assert failing.status_code in (403, 422)
    assert deploy(client, stranger, service_id, build_id).status_code == 403
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None and build.status == "running" and build.compose is None


def test_variables_are_encrypted_and_hidden_unless_revealed(
    client: FlaskClient,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
    db_session: Session,
    service_id: int,
) -> None:
    url = f"/v1/services/{service_id}/variables"
    put = client.put(
        f"{url}/DATABASE_PASSWORD", json={"value": "hunter2-secret"}, headers=admin_headers
    )
    assert put.status_code == 200 and put.json.get("value") is None
    stored = db_session.scalar(select(Variable))
    assert stored is not None and b"hunter2" not in stored.value_encrypted
    assert client.get(url, headers=read_headers).json[0]["value"] is None
    assert client.get(f"{url}?reveal=true", headers=read_headers).status_code == 403
    revealed = client.get(f"{url}?reveal=true", headers=admin_headers).json
    assert revealed[0]["value"] == "hunter2-secret"


def test_registry_credentials_are_encrypted_and_never_listed(
    client: FlaskClient,
    admin_headers: dict[str, str],
    worker_headers: dict[str, str],
    database: Database,
    service_id: int,
) -> None:
    created = client.post(
        "/v1/registries",
        json={"address": "127.0.0.1:5000", "username": "ci", "password": "registry-pass"},
        headers=admin_headers,
    )
    assert created.status_code == 201, created.json
    assert "registry-pass" not in created.get_data(as_text=True)
    assert client.get("/v1/registries", headers=admin_headers).json[0]["has_password"] is True
    build_id = new_build(database, service_id, SHA_A, 1)
    claimed = client.post(
        f"/v1/builds/{build_id}/steps/clone/claim",
        json={"attempt": 1, "worker": "build-1@test"},
        headers=worker_headers,
    )
    assert claimed.status_code == 200, claimed.json
    credentials = client.get(
        f"/v1/builds/{build_id}/registry-credentials", headers=worker_headers
    ).json
    assert credentials == {
        "address": "127.0.0.1:5000",
        "username": "ci",
        "password": "registry-pass",
    }
    bad = client.post("/v1/registries", json={"address": "https://x"}, headers=admin_headers)
    assert bad.status_code == 422
