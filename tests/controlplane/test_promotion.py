"""Promotion (issue 19): ``POST /v1/environments/{id}/promote`` deploys what staging runs
to production, the same build (digests, compose file) with no new build, recorded,
audited, shown on GitHub as a deployment of that commit to production, rolled back like
any deployment; the refusals answer clear 4xx; ``portside promote`` and the dashboard's
Promote form do the same."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from contracts.agentwire import AgentReport
from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import AuditEvent, Build, Deployment, Environment, Host
from controlplane.services import (
    agentreports,
    approvals,
    catalog,
    feedback,
    githubwrites,
    hosts,
    servicerules,
    snapshots,
)
from controlplane.settings import Settings
from tests.controlplane.test_cli import assert_one_line_failure, run_portside
from tests.controlplane.test_intake_processing import (
    github_app,  # noqa: F401 (a fixture)
    post,
    process,
    seeded,  # noqa: F401 (a fixture)
    service,  # noqa: F401 (a fixture)
)
from tests.controlplane.test_staging import (
    DIGEST,
    branch_push,
    create,
    deploy_newest,
    service_id,  # noqa: F401 (a fixture)
)
from tests.dashboard.test_dashboard import csrf_of, log_in, make_token
from tests.fixtures.stack import Stack, wait_for
from tests.githubserver.server import GitHubServer
from tests.support.live import LiveServer
from tests.tasks.test_pipeline_e2e import REPOSITORY, install, post_delivery
from tests.tasks.test_pipeline_e2e import push as e2e_push
from tests.tasks.test_pipeline_e2e import push_payload as e2e_push_payload


@pytest.fixture
def staged(
    client: FlaskClient,
    database: Database,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service_id: int,  # noqa: F811
    admin_headers: dict[str, str],
) -> dict[str, Any]:
    """Production runs a build of master, staging (tracking develop) one of develop."""
    staging = create(client, admin_headers, service_id, "staging", "develop").json
    master = branch_push(seeded, "master", {"index.html": "live\n"}, 1_700_000_100)
    process(database, post(client, "push", master), github_app)
    live_deployment = deploy_newest(database, "hello")
    develop = branch_push(seeded, "develop", {"index.html": "next\n"}, 1_700_000_200)
    process(database, post(client, "push", develop), github_app)
    staged_deployment = deploy_newest(database, "hello-staging")
    with database.session_scope() as session:
        production = session.scalar(select(Environment).where(Environment.name == "hello"))
        assert production is not None
        production_id = production.id
        staged_build = session.get(Deployment, staged_deployment).build_id  # type: ignore[union-attr]
    return {
        "staging": staging["id"],
        "production": production_id,
        "live_deployment": live_deployment,
        "staged_build": staged_build,
        "develop": develop["after"],
        "master": master["after"],
    }


def promote(client: FlaskClient, headers: dict[str, str], source: int, target: int) -> Any:
    return client.post(f"/v1/environments/{source}/promote", json={"to": target}, headers=headers)


def build_count(db_session: Session) -> int:
    db_session.expire_all()
    return int(db_session.scalar(select(func.count(Build.id))) or 0)


def report_active(database: Database, environment: str, deployment_id: int) -> None:
    """The agent of web-1 reports ``deployment_id`` running healthy in ``environment``."""
    with database.session_scope() as session:
        host = session.scalar(select(Host).where(Host.name == "web-1"))
        assert host is not None
        item = {"name": environment, "deployment_id": deployment_id, "state": "running"}
        report = {"generation": host.generation, "environments": [{**item, "healthy": True}]}
        agentreports.record_status(session, host, AgentReport.from_json(report))


def test_staging_is_promoted_to_production_without_a_new_build(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    settings: Settings,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    staged: dict[str, Any],
    admin_headers: dict[str, str],
) -> None:
    before = build_count(db_session)

    answer = promote(client, admin_headers, staged["staging"], staged["production"])

    assert answer.status_code == 202, answer.json
    body = answer.json
    current = body["current_deployment"]
    assert (body["name"], body["status"], current["id"]) == (
        "hello",
        "deploying",
        body["deployment_id"],
    )
    assert (current["build_id"], current["commit_sha"]) == (
        staged["staged_build"],
        staged["develop"],
    )
    assert (current["promoted_from"], current["promoted_by"]) == (
        "hello-staging",
        "token:test-admin",
    )
    assert current["images"][0]["digest"] == DIGEST
    assert build_count(db_session) == before  # nothing was built
    listed = client.get("/v1/builds", headers=admin_headers).json
    assert len(listed) == before
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "environment.promote"))
    assert event is not None and event.actor == "token:test-admin"
    assert (
        event.detail["source"] == "hello-staging"
        and event.detail["build"] == staged["staged_build"]
    )
    # Production's desired state runs staging's build: its digest, its compose file.
    host = db_session.scalar(select(Host).where(Host.name == "web-1"))
    assert host is not None
    snapshot = snapshots.snapshot(db_session, SecretBox.from_settings(settings), host, "r")
    entries = {e["name"]: e for e in snapshot.to_json()["environments"]}
    assert entries["hello"]["build_id"] == entries["hello-staging"]["build_id"]
    assert entries["hello"]["image"] == entries["hello-staging"]["image"]
    assert entries["hello"]["image"].endswith(f"@{DIGEST}")
    assert entries["hello"]["deployment_id"] == body["deployment_id"]

    # On GitHub: a deployment of that commit to production, in progress, then a success.
    def event_of(name: str, object_id: int) -> None:
        with database.session_scope() as session:
            feedback.send(session, github_app, settings, name, object_id)

    event_of("deployment_promoted", body["deployment_id"])
    report_active(database, "hello", body["deployment_id"])
    event_of("deployment_active", body["deployment_id"])
    state = seeded.state
    (promoted,) = [d for d in state.deployments if d.environment == "hello"]
    assert (promoted.sha, promoted.production_environment, promoted.transient_environment) == (
        staged["develop"],
        True,
        False,
    )
    assert promoted.payload[githubwrites.PAYLOAD_KEY] == {
        "environment": staged["production"],
        "deployment": body["deployment_id"],
    }
    statuses = [s.state for s in state.deployment_statuses if s.deployment_id == promoted.id]
    assert statuses == ["in_progress", "success"]
    assert "Promoted from hello-staging" in state.deployment_statuses[-1].description
    # Running it again changes nothing; staging's own deployment is not production's.
    event_of("deployment_active", body["deployment_id"])
    assert [d.id for d in state.deployments if d.environment == "hello"] == [promoted.id]
    db_session.expire_all()
    deployment = db_session.get(Deployment, body["deployment_id"])
    assert deployment is not None and deployment.github_deployment_id == promoted.id
    assert deployment.status == "active"


def test_staging_s_own_github_deployment_is_not_production(
    database: Database,
    settings: Settings,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    staged: dict[str, Any],
) -> None:
    with database.session_scope() as session:
        deployment = session.scalar(
            select(Deployment).where(Deployment.build_id == staged["staged_build"])
        )
        assert deployment is not None
        feedback.send(session, github_app, settings, "deployment_active", deployment.id)

    (staging,) = [d for d in seeded.state.deployments if d.environment == "hello-staging"]
    assert (staging.production_environment, staging.transient_environment) == (False, False)


def test_a_promotion_is_rolled_back_and_promoted_again(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    staged: dict[str, Any],
    admin_headers: dict[str, str],
) -> None:
    promoted = promote(client, admin_headers, staged["staging"], staged["production"]).json
    report_active(database, "hello", promoted["deployment_id"])

    rolled = client.post(
        f"/v1/environments/{staged['production']}/rollback", json={}, headers=admin_headers
    )

    assert rolled.status_code == 202, rolled.json
    assert rolled.json["id"] == staged["live_deployment"]
    assert rolled.json["commit_sha"] == staged["master"]
    report_active(database, "hello", staged["live_deployment"])
    again = promote(client, admin_headers, staged["staging"], staged["production"])
    assert again.status_code == 202, again.json
    assert again.json["deployment_id"] == promoted["deployment_id"]  # its row, current again
    assert again.json["current_deployment"]["commit_sha"] == staged["develop"]
    # Asking while production runs it changes nothing.
    same = promote(client, admin_headers, staged["staging"], staged["production"])
    assert same.json["deployment_id"] == promoted["deployment_id"]
    events = db_session.scalars(
        select(AuditEvent.action).where(AuditEvent.action == "environment.promote")
    ).all()
    assert len(events) == 2


def test_a_push_after_the_promotion_replaces_it_and_one_before_does_not(
    client: FlaskClient,
    database: Database,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    staged: dict[str, Any],
    admin_headers: dict[str, str],
) -> None:
    promoted = promote(client, admin_headers, staged["staging"], staged["production"]).json
    report_active(database, "hello", promoted["deployment_id"])

    # Pushed before the promotion (delivered late): it does not undo the person's choice.
    early = branch_push(seeded, "master", {"index.html": "early\n"}, 1_700_000_300)
    process(database, post(client, "push", early), github_app)
    deploy_newest(database, "hello")
    later = branch_push(seeded, "master", {"index.html": "later\n"}, int(time.time()) + 5)
    process(database, post(client, "push", later), github_app)
    later_id = deploy_newest(database, "hello")

    with database.session_scope() as session:
        early_row = session.scalar(
            select(Deployment)
            .join(Build, Deployment.build_id == Build.id)
            .where(Build.commit_sha == early["after"])
        )
        assert early_row is not None and early_row.status == "superseded"
        production = session.get(Environment, staged["production"])
        assert production is not None and production.current_deployment_id == later_id


def test_the_refusals_are_clear(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    staged: dict[str, Any],
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
) -> None:
    staging, production = staged["staging"], staged["production"]
    with database.session_scope() as session:
        hello = catalog.get_service(session, catalog.list_services(session)[0].id)
        other = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="other", repository=hello.repository_full_name, branch="master", host="web-1"
            ),
            "test",
        )
        other_production = session.scalar(
            select(Environment).where(Environment.service_id == other.id)
        )
        assert other_production is not None
        sandbox, _token = hosts.create_host(session, "sandbox", "test", untrusted=True)
        untrusted_target = Environment(
            service_id=hello.id, host_id=sandbox.id, name="hello-qa", kind="qa", branch="qa"
        )
        preview = Environment(
            service_id=hello.id,
            host_id=hello.host_id,
            name="hello-pr-1",
            kind="preview",
            branch="feature",
            pr_number=1,
        )
        fork = Environment(
            service_id=hello.id,
            host_id=sandbox.id,
            name="hello-pr-2",
            kind="preview",
            branch="fork",
            pr_number=2,
            from_fork=True,
        )
        empty = Environment(
            service_id=hello.id,
            host_id=hello.host_id,
            name="hello-next",
            kind="next",
            branch="next",
        )
        session.add_all([untrusted_target, preview, fork, empty])
        session.flush()
        ids = {
            "other": other_production.id,
            "untrusted": untrusted_target.id,
            "preview": preview.id,
            "fork": fork.id,
            "empty": empty.id,
        }

    def refused(
        source: int, target: int, headers: dict[str, str] = admin_headers
    ) -> tuple[int, str]:
        answer = promote(client, headers, source, target)
        return answer.status_code, (answer.json or {}).get("message", "")

    assert refused(staging, ids["other"]) == (
        422,
        "hello-staging and other are environments of different services",
    )
    assert refused(ids["empty"], production) == (409, "hello-next has nothing deployed to promote")
    assert refused(staging, ids["preview"])[0] == 422
    assert "is a preview" in refused(staging, ids["preview"])[1]
    status, message = refused(ids["fork"], production)
    assert status == 403 and "untrusted code never reaches hello" in message
    status, message = refused(staging, ids["untrusted"])
    assert status == 409 and "untrusted" in message
    assert refused(staging, staging)[0] == 422
    assert refused(staging, 9999)[0] == 422
    assert refused(9999, production)[0] == 404
    assert refused(staging, production, read_headers)[0] == 403
    missing_to = client.post(f"/v1/environments/{staging}/promote", json={}, headers=admin_headers)
    assert missing_to.status_code == 422
    # A source whose deployment has not run healthy yet is not promoted either.
    with database.session_scope() as session:
        deployment = session.scalar(
            select(Deployment).where(Deployment.build_id == staged["staged_build"])
        )
        assert deployment is not None
        deployment.status = "pending"
    status, message = refused(staging, production)
    assert status == 409 and "is pending" in message
    db_session.expire_all()
    production_row = db_session.get(Environment, production)
    assert production_row is not None
    assert production_row.current_deployment_id == staged["live_deployment"]


def test_an_approval_required_target_holds_the_promotion_until_approved(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    staged: dict[str, Any],
    admin_headers: dict[str, str],
) -> None:
    with database.session_scope() as session:
        production = session.get(Environment, staged["production"])
        assert production is not None
        production.approval_required = True

    held = promote(client, admin_headers, staged["staging"], staged["production"])

    assert held.status_code == 202, held.json
    assert (held.json["deployment_id"], held.json["status"]) == (None, "awaiting_approval")
    assert held.json["current_deployment"]["id"] == staged["live_deployment"]
    with database.session_scope() as session:
        released = approvals.approve(session, staged["production"], "token:approver")
        assert released.deployment is not None
        deployment_id = released.deployment.id
    db_session.expire_all()
    deployment = db_session.get(Deployment, deployment_id)
    assert deployment is not None
    assert (deployment.build_id, deployment.promoted_from_id) == (
        staged["staged_build"],
        staged["staging"],
    )
    production_row = db_session.get(Environment, staged["production"])
    assert production_row is not None and production_row.current_deployment_id == deployment_id


@pytest.fixture
def live(app: Flask, github_app: GitHubApp) -> Iterator[LiveServer]:  # noqa: F811
    app.extensions["portside.github"] = github_app
    server = LiveServer(app).start()
    yield server
    server.stop()


def test_portside_environments_create_and_promote(
    live: LiveServer,
    database: Database,
    client: FlaskClient,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service_id: int,  # noqa: F811
    admin_headers: dict[str, str],
    tmp_path: Path,
) -> None:
    env = {
        "PORTSIDE_URL": live.url,
        "PORTSIDE_DATA_DIR": str(tmp_path / "data"),
        "PORTSIDE_TOKEN": admin_headers["Authorization"].split(" ", 1)[1],
    }
    created = run_portside(
        ["environments", "create", "hello", "staging", "--branch", "develop"], env
    )
    assert created.code == 0, created
    assert "hello-staging (staging.hello.example.com) tracks develop" in created.stdout
    develop = branch_push(seeded, "develop", {"index.html": "next\n"}, 1_700_000_200)
    process(database, post(client, "push", develop), github_app)
    deployment_id = deploy_newest(database, "hello-staging")
    with database.session_scope() as session:
        build_id = session.get(Deployment, deployment_id).build_id  # type: ignore[union-attr]

    promoted = run_portside(["promote", "hello-staging", "--to", "hello"], env)

    assert promoted.code == 0, promoted
    assert re.search(
        rf"promoting hello-staging to hello: deployment \d+ of build {build_id} "
        rf"\({develop['after'][:10]}\), nothing rebuilt",
        promoted.stdout,
    ), promoted.stdout
    listed = run_portside(["environments", "list", "--kind", "staging"], env)
    assert listed.code == 0 and "hello-staging" in listed.stdout
    assert_one_line_failure(
        run_portside(["promote", "hello", "--to", "hello"], env), 2, "not promoted to itself"
    )
    deleted = run_portside(["environments", "delete", "hello-staging"], env)
    assert deleted.code == 0 and "hello-staging is being torn down" in deleted.stdout


PROMOTE_FORM = re.compile(
    r'<form class="promote" method="post" action="(/environments/\d+/promote)">\s*'
    r'<input type="hidden" name="csrf" value="[^"]+">\s*'
    r'<label>Promote to <select name="to"><option value="(\d+)">hello</option>'
)


def test_the_dashboard_promote_form_needs_an_admin_and_the_csrf_token(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    staged: dict[str, Any],
    service_id: int,  # noqa: F811
) -> None:
    assert log_in(client, make_token(database, "read")).status_code == 302
    page = client.get(f"/services/{service_id}").text
    assert PROMOTE_FORM.search(page) is None
    action = f"/environments/{staged['staging']}/promote"
    forbidden = client.post(action, data={"csrf": csrf_of(page), "to": staged["production"]})
    assert forbidden.status_code == 403
    client.post("/logout", data={"csrf": csrf_of(page)})

    assert log_in(client, make_token(database, "admin")).status_code == 302
    page = client.get(f"/services/{service_id}").text
    found = PROMOTE_FORM.search(page)
    assert found is not None, page
    assert found.groups() == (action, str(staged["production"]))
    csrf = csrf_of(page)
    assert client.post(action, data={"csrf": "forged", "to": found.group(2)}).status_code == 400
    assert build_count(db_session) == 2

    done = client.post(action, data={"csrf": csrf, "to": found.group(2)})

    assert done.status_code == 302
    assert done.headers["Location"] == f"/services/{service_id}"
    db_session.expire_all()
    production = db_session.get(Environment, staged["production"])
    assert production is not None and production.current_deployment is not None
    assert production.current_deployment.build_id == staged["staged_build"]
    assert build_count(db_session) == 2
    assert (
        "promoted from hello-staging by token:dash-admin"
        in client.get(f"/services/{service_id}").text
    )


def _environment_of(stack: Stack, name: str) -> Environment | None:
    with stack.database.session_scope() as session:
        return session.scalar(select(Environment).where(Environment.name == name))


def _serves(stack: Stack, name: str, text: str) -> bool:
    environment = _environment_of(stack, name)
    if environment is None or not environment.address:
        return False
    try:
        return text in requests.get(f"http://{environment.address}/", timeout=2).text
    except requests.RequestException:
        return False


def _active(stack: Stack, name: str) -> Deployment | None:
    with stack.database.session_scope() as session:
        environment = session.scalar(select(Environment).where(Environment.name == name))
        current = environment.current_deployment if environment else None
        if current is None or current.status != "active":
            return None
        current.build.images  # noqa: B018 (loaded while the session is open)
        return current


@pytest.mark.docker
@pytest.mark.slow
def test_end_to_end_production_runs_staging_s_image_and_nothing_is_built_or_pushed(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    install(stack, base_image)
    stack.start_buildworker("build-promote")
    stack.start_agent("web-1")
    api = stack.url + "/v1"
    hello = requests.get(f"{api}/services", headers=stack.admin_headers, timeout=10).json()[0]
    created = requests.post(
        f"{api}/services/{hello['id']}/environments",
        json={"name": "staging", "branch": "develop"},
        headers=stack.admin_headers,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    live = e2e_push(stack, {"index.html": "in production\n"}, 1_700_000_000)
    wait_for(lambda: _serves(stack, "hello", "in production"), 300, 0.5, "production serving")
    sha = stack.github.state.commit(REPOSITORY, {"index.html": "staged\n"}, branch="develop")
    payload = e2e_push_payload(stack, sha, 1_700_000_100)
    payload["ref"] = "refs/heads/develop"
    post_delivery(stack, "push", payload)
    wait_for(lambda: _serves(stack, "hello-staging", "staged"), 300, 0.5, "staging serving")
    staged = _active(stack, "hello-staging")
    assert staged is not None and staged.build.commit_sha == sha
    image = staged.build.images["app"]
    repository = image["repository"].split("/", 1)[1]
    tags = registry.list_tags(repository)
    built = requests.get(f"{api}/builds", headers=stack.admin_headers, timeout=10).json()

    promoted = requests.post(
        f"{api}/environments/{created.json()['id']}/promote",
        json={"to": _environment_of(stack, "hello").id},  # type: ignore[union-attr]
        headers=stack.admin_headers,
        timeout=10,
    )

    assert promoted.status_code == 202, promoted.text
    wait_for(lambda: _serves(stack, "hello", "staged"), 120, 0.5, "production serving staging's")
    running = _active(stack, "hello")
    assert running is not None and running.build_id == staged.build_id
    assert running.build.images["app"]["digest"] == image["digest"]
    assert requests.get(f"{api}/builds", headers=stack.admin_headers, timeout=10).json() == built
    assert registry.list_tags(repository) == tags  # nothing pushed
    assert registry.manifest_digest(repository, image["tag"]) == image["digest"]
    wait_for(
        lambda: [
            d
            for d in stack.github.state.deployments
            if (d.environment, d.sha, d.production_environment) == ("hello", sha, True)
        ],
        60,
        0.5,
        "production's GitHub deployment of staging's commit",
    )
    for done in (live, sha):
        with stack.database.session_scope() as session:
            for build in session.scalars(select(Build).where(Build.commit_sha == done)):
                pushed = build.images["app"]
                registry.delete_image(pushed["repository"].split("/", 1)[1], pushed["tag"])


def test_a_promotion_that_fails_and_its_torn_down_target_end_on_github(
    client: FlaskClient,
    database: Database,
    settings: Settings,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    staged: dict[str, Any],
    service_id: int,  # noqa: F811
    admin_headers: dict[str, str],
) -> None:
    qa = create(client, admin_headers, service_id, "qa", "qa").json
    promoted = promote(client, admin_headers, staged["staging"], qa["id"]).json
    with database.session_scope() as session:
        host = session.scalar(select(Host).where(Host.name == "web-1"))
        assert host is not None
        failed = {"name": "hello-qa", "deployment_id": promoted["deployment_id"]}
        report = {**failed, "state": "failed", "error": "exited 1"}
        body = {"generation": host.generation, "environments": [report]}
        agentreports.record_status(session, host, AgentReport.from_json(body))
        feedback.send(session, github_app, settings, "deployment_failed", promoted["deployment_id"])
    assert client.delete(f"/v1/environments/{qa['id']}", headers=admin_headers).status_code == 204
    with database.session_scope() as session:
        feedback.send(session, github_app, settings, "preview_removed", qa["id"])

    state = seeded.state
    (deployment,) = [d for d in state.deployments if d.environment == "hello-qa"]
    assert (deployment.sha, deployment.production_environment) == (staged["develop"], False)
    statuses = [s.state for s in state.deployment_statuses if s.deployment_id == deployment.id]
    assert statuses == ["failure", "inactive"]
    # The build's own commit status and Check Run tell of the build, not of the promotion.
    assert not [s for s in state.statuses if s.state == "failure"]
