"""The control plane's authoritative check of a worker's upload: the compose policy, the
image namespace and digests. A refusal fails the build, refuses the environment with the
key paths named, and deploys nothing; production keeps what it runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.agentwire import AgentReport
from controlplane.db import Database
from controlplane.models import AuditEvent, Build, Environment, Host
from controlplane.services import catalog, hosts, pushes, servicerules
from controlplane.services.artifacts import artifact_violations

REGISTRY = "127.0.0.1:5000"  # the test settings' default registry
DIGEST = "sha256:" + "0" * 64
OTHER_DIGEST = "sha256:" + "1" * 64
WEB = f"{REGISTRY}/o/hello-web"
APP = f"{REGISTRY}/o/hello"
PR_WEB = f"{REGISTRY}/o/hello/pr-7/web"


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


def new_build(database: Database, service_id: int, sha: str, *, fork_pr: int | None = None) -> int:
    """A queued build of the production environment; ``fork_pr`` makes it a fork's."""
    with database.session_scope() as session:
        service = catalog.get_service(session, service_id)
        build = pushes.start_build(
            session,
            service,
            pushes.production_environment(session, service),
            sha,
            branch="main",
            pushed_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
            + dt.timedelta(minutes=int(sha[0], 16)),
        )
        assert build is not None
        if fork_pr is not None:
            build.untrusted = True
            build.environment.pr_number = fork_pr
        session.flush()
        return build.id


def upload(
    client: FlaskClient,
    headers: dict[str, str],
    build_id: int,
    images: dict[str, Any],
    compose: str | None,
    **extra: Any,
) -> Any:
    """Claim the steps up to upload_compose as a worker does, then upload the artifacts."""
    for step in ("clone", "build", "push", "upload_compose"):
        claimed = client.post(
            f"/v1/builds/{build_id}/steps/{step}/claim",
            json={"attempt": 1, "worker": "build-1@test"},
            headers=headers,
        )
        assert claimed.status_code == 200, claimed.json
        if step != "upload_compose":
            finished = client.post(
                f"/v1/builds/{build_id}/steps/{step}/finish",
                json={"attempt": 1, "status": "succeeded"},
                headers=headers,
            )
            assert finished.status_code == 204, finished.json
    return client.post(
        f"/v1/builds/{build_id}/artifacts",
        json={"attempt": 1, "images": images, "compose": compose, **extra},
        headers=headers,
    )


def deploy(client: FlaskClient, headers: dict[str, str], service_id: int, build_id: int) -> Any:
    client.post(
        f"/v1/builds/{build_id}/steps/upload_compose/finish",
        json={"attempt": 1, "status": "succeeded"},
        headers=headers,
    )
    return client.post(
        f"/v1/services/{service_id}/deployments", json={"build_id": build_id}, headers=headers
    )


def pinned(web: str = f"{WEB}@{DIGEST}", extra: str = "") -> str:
    return (
        f"services:\n  web:\n    image: {web}\n    expose: ['8000']\n{extra}"
        "  db:\n    image: postgres:16\n    volumes: [pgdata:/var/lib/postgresql/data]\n"
        "volumes:\n  pgdata: {}\n"
    )


def image(repository: str = WEB, digest: str | None = DIGEST) -> dict[str, Any]:
    return {"repository": repository, "tag": "aaaaaaaaaaaa", "digest": digest}


SHA_GOOD = "1" * 40
SHA_BAD = "2" * 40

# (images, compose, fork's PR or None, the key path the refusal must name)
REFUSED = {
    "cap_add": (
        {"web": image()},
        pinned(extra="    cap_add: [SYS_MODULE]\n"),
        None,
        "services.web.cap_add",
    ),
    "traefik label": (
        {"web": image()},
        pinned(extra="    labels: {traefik.http.routers.x.rule: 'Host(`cp.example.com`)'}\n"),
        None,
        "services.web.labels.traefik.http.routers.x.rule",
    ),
    "bind of .": (
        {"web": image()},
        pinned(extra="    volumes: ['.:/app']\n"),
        None,
        "services.web.volumes[0]",
    ),
    "alias bomb": (
        {"web": image()},
        "a: &a [x]\n" + "".join(f"x-{i}: *a\n" for i in range(101)) + pinned(),
        None,
        "(file)",
    ),
    "still builds on the host": (
        {"web": image()},
        pinned(extra="    build: .\n"),
        None,
        "services.web.build",
    ),
    "not the pushed digest": (
        {"web": image()},
        pinned(web=f"{WEB}@{OTHER_DIGEST}"),
        None,
        "services.web.image",
    ),
    "another service's repository": (
        {"web": image(f"{REGISTRY}/o/other-web")},
        pinned(web=f"{REGISTRY}/o/other-web@{DIGEST}"),
        None,
        "images.web.repository",
    ),
    "another registry": (
        {"app": image("evil.example.com/o/hello")},
        None,
        None,
        "images.app.repository",
    ),
    "image of no service": ({"web": image(), "ghost": image()}, pinned(), None, "images.ghost"),
    "a fork under production's name": ({"web": image()}, pinned(), 7, "images.web.repository"),
    "a fork running production's image": (
        {"web": image(PR_WEB)},
        pinned(web=f"{PR_WEB}@{DIGEST}", extra=f"  prod:\n    image: {APP}:main\n"),
        7,
        "services.prod.image",
    ),
    # A tag is the worker's word, printed by the CLI and the dashboard: Docker's grammar
    # only, never a terminal's escape sequences (here OSC 52, writing the clipboard).
    "a tag that is no tag": (
        {"web": {**image(), "tag": "main\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07"}},
        pinned(),
        None,
        "images.web.tag",
    ),
    # The registry under other spellings of its address, and a bare image id (any image
    # the host holds): review finding 4.
    **{
        f"a fork running production's image as {prod}": (
            {"web": image(PR_WEB)},
            pinned(web=f"{PR_WEB}@{DIGEST}", extra=f"  prod:\n    image: '{prod}'\n"),
            7,
            "services.prod.image",
        )
        for prod in (
            "localhost:5000/o/hello:main",
            "127.1:5000/o/hello:main",
            "[::1]:5000/o/hello:main",
            "127.0.0.1.:5000/o/hello:main",
            "0" * 12,
        )
    },
}


@pytest.mark.parametrize(
    ("compose", "sent", "stored", "violation"),
    [
        (pinned(), "web", "web", None),
        (pinned(), None, "web", None),  # a worker that sends none: derived all the same
        (pinned(), "db", None, "routed_service: the compose file routes 'web', not 'db'"),
        (
            pinned(extra="    ports: ['8000']\n").replace(
                "postgres:16", "postgres:16\n    ports: [5432]"
            ),
            None,
            None,
            "routed_service: compose file: several services are published with ports: (web, db)",
        ),
    ],
)
def test_the_routed_service_is_the_one_the_pinned_file_names(
    client: FlaskClient,
    worker_headers: dict[str, str],
    db_session: Session,
    database: Database,
    service_id: int,
    compose: str,
    sent: str | None,
    stored: str | None,
    violation: str | None,
) -> None:
    build_id = new_build(database, service_id, SHA_GOOD)
    extra = {"routed_service": sent} if sent else {}
    response = upload(client, worker_headers, build_id, {"web": image()}, compose, **extra)
    db_session.expire_all()
    build = db_session.get(Build, build_id)
    assert build is not None
    if violation is None:
        assert response.status_code == 204, response.json
        assert build.routed_service == stored
    else:
        assert response.status_code == 422, response.json
        assert any(v.startswith(violation) for v in response.json["details"]["violations"])
        assert (build.status, build.routed_service) == ("failed", None)


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_refused_upload_fails_the_build_and_refuses_the_environment(
    client: FlaskClient,
    worker_headers: dict[str, str],
    database: Database,
    db_session: Session,
    service_id: int,
    case: str,
) -> None:
    images, compose, fork_pr, path = REFUSED[case]
    good = new_build(database, service_id, SHA_GOOD)
    app_image = {"app": image(APP)}
    assert upload(client, worker_headers, good, app_image, None).status_code == 204
    assert deploy(client, worker_headers, service_id, good).status_code == 201
    environment = db_session.get(Build, good).environment
    deployed = environment.current_deployment_id
    generation = db_session.get(Host, environment.host_id).generation

    bad = new_build(database, service_id, SHA_BAD, fork_pr=fork_pr)
    response = upload(client, worker_headers, bad, images, compose)

    assert response.status_code == 422, response.json
    assert response.json["error"] == "compose_refused"
    assert path in response.json["message"]
    assert any(v.startswith(f"{path}: ") for v in response.json["details"]["violations"])
    db_session.expire_all()
    build = db_session.get(Build, bad)
    assert (build.status, build.failed_step) == ("failed", "upload_compose")
    assert path in build.error and build.images == {} and build.compose is None
    environment = db_session.get(Environment, build.environment_id)
    assert environment.status == "refused"
    assert path in environment.status_reason and SHA_BAD[:7] in environment.status_reason
    # Nothing deployed: production keeps serving the last good build.
    assert environment.current_deployment_id == deployed
    assert db_session.get(Host, environment.host_id).generation == generation
    assert deploy(client, worker_headers, service_id, bad).status_code == 409


def test_an_admin_allowed_key_passes_for_production_never_for_a_fork(
    client: FlaskClient,
    worker_headers: dict[str, str],
    database: Database,
    db_session: Session,
    service_id: int,
) -> None:
    with database.session_scope() as session:
        catalog.get_service(session, service_id).compose_allow = ["cap_add"]
    compose = pinned(extra="    cap_add: [NET_ADMIN]\n")
    production = new_build(database, service_id, SHA_GOOD)
    assert upload(client, worker_headers, production, {"web": image()}, compose).status_code == 204
    assert deploy(client, worker_headers, service_id, production).status_code == 201

    fork = new_build(database, service_id, SHA_BAD, fork_pr=7)
    fork_compose = compose.replace(f"{WEB}@", f"{PR_WEB}@")
    response = upload(client, worker_headers, fork, {"web": image(PR_WEB)}, fork_compose)
    assert response.status_code == 422
    assert "services.web.cap_add" in response.json["message"]


@pytest.mark.parametrize(
    ("images", "compose", "fork_pr"),
    [
        ({"app": image(APP)}, None, None),
        ({"web": image()}, pinned(), None),
        ({"app": image(f"{REGISTRY}/o/hello/pr-7")}, None, 7),
        ({"web": image(PR_WEB)}, pinned(web=f"{PR_WEB}@{DIGEST}"), 7),
    ],
    ids=["root dockerfile", "compose", "fork root dockerfile", "fork compose"],
)
def test_good_uploads_are_recorded_and_deployed(
    client: FlaskClient,
    worker_headers: dict[str, str],
    database: Database,
    db_session: Session,
    service_id: int,
    images: dict[str, Any],
    compose: str | None,
    fork_pr: int | None,
) -> None:
    build_id = new_build(database, service_id, SHA_GOOD, fork_pr=fork_pr)
    assert upload(client, worker_headers, build_id, images, compose).status_code == 204
    assert deploy(client, worker_headers, service_id, build_id).status_code == 201
    build = db_session.get(Build, build_id)
    assert (build.status, build.images, build.compose) == ("succeeded", images, compose)
    assert build.environment.status == "deploying" and build.environment.status_reason is None


@pytest.mark.parametrize("digest", ["latest", "sha256:abc", "sha256:" + "A" * 64, None])
def test_a_digest_is_required_by_the_check_itself(
    client: FlaskClient,
    worker_headers: dict[str, str],
    database: Database,
    db_session: Session,
    service_id: int,
    digest: str | None,
) -> None:
    build = db_session.get(Build, new_build(database, service_id, SHA_GOOD))
    violations = artifact_violations(build, {"app": image(APP, digest)}, None, REGISTRY)
    assert [v.path for v in violations] == ["images.app.digest"]
    # Through the API the schema answers first; the build is not recorded either way.
    response = upload(client, worker_headers, build.id, {"app": image(APP, digest)}, None)
    assert response.status_code == 422


def test_resource_limits_above_the_services_caps_are_refused(
    client: FlaskClient, worker_headers: dict[str, str], database: Database, service_id: int
) -> None:
    with database.session_scope() as session:
        service = catalog.get_service(session, service_id)
        service.cpu_limit, service.memory_limit = 1.0, "512m"
    compose = pinned(extra="    mem_limit: 1g\n    cpus: 0.5\n")
    response = upload(
        client, worker_headers, new_build(database, service_id, SHA_GOOD), {"web": image()}, compose
    )
    assert response.status_code == 422
    assert [v.split(":")[0] for v in response.json["details"]["violations"]] == [
        "services.web.mem_limit"
    ]


def test_the_refusal_is_audited_and_ends_with_the_next_good_build(
    client: FlaskClient,
    worker_headers: dict[str, str],
    database: Database,
    db_session: Session,
    service_id: int,
) -> None:
    bad = new_build(database, service_id, SHA_BAD)
    refused = upload(client, worker_headers, bad, {"web": image()}, pinned(extra="    pid: host\n"))
    assert refused.status_code == 422
    environment_id = db_session.get(Build, bad).environment_id
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "environment.refused"))
    assert event is not None and event.target_id == str(environment_id)

    good = new_build(database, service_id, "3" * 40)
    assert upload(client, worker_headers, good, {"web": image()}, pinned()).status_code == 204
    db_session.expire_all()
    environment = db_session.get(Environment, environment_id)
    assert (environment.status, environment.status_reason) == ("building", None)


def test_the_refusal_stays_shown_while_the_deployment_before_it_serves(
    client: FlaskClient,
    worker_headers: dict[str, str],
    database: Database,
    db_session: Session,
    service_id: int,
) -> None:
    from controlplane.services import agentreports

    good = new_build(database, service_id, SHA_GOOD)
    assert upload(client, worker_headers, good, {"app": image(APP)}, None).status_code == 204
    assert deploy(client, worker_headers, service_id, good).status_code == 201
    environment = db_session.get(Build, good).environment
    deployment_id = environment.current_deployment_id

    def agent_reports_healthy() -> Environment:
        with database.session_scope() as session:
            env = session.get(Environment, environment.id)
            assert env is not None
            item = {"name": env.name, "deployment_id": deployment_id, "state": "running"}
            body = {"generation": env.host.generation, "environments": [{**item, "healthy": True}]}
            agentreports.record_status(session, env.host, AgentReport.from_json(body))
        db_session.expire_all()
        refreshed = db_session.get(Environment, environment.id)
        assert refreshed is not None
        return refreshed

    assert agent_reports_healthy().status == "running"
    bad = new_build(database, service_id, SHA_BAD)
    refused = upload(client, worker_headers, bad, {"web": image()}, pinned(extra="    pid: host\n"))
    assert refused.status_code == 422
    after = agent_reports_healthy()
    assert after.status == "refused" and "services.web.pid" in (after.status_reason or "")
