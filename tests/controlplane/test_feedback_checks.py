"""Check Runs and GitHub deployments for every environment, against the test GitHub server:
a build's Check Run moves queued → in_progress (naming the step) → a conclusion, with its
steps, digests and a failure's last log lines; production gets GitHub deployments that
replace each other; a superseded build never stays pending; "Re-run" rebuilds."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.masking import MASK
from contracts.steps import STEPS
from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import (
    Build,
    Deployment,
    Environment,
    Installation,
    Repository,
    WebhookDelivery,
    utcnow,
)
from controlplane.services import (
    builds,
    catalog,
    deliveries,
    effects,
    feedback,
    githubwrites,
    hosts,
    pushes,
    servicerules,
    stepclaims,
    variables,
)
from controlplane.services.deployments import record_deployment
from controlplane.services.outcomes import HandlerContext
from controlplane.settings import Settings
from tests.controlplane.test_feedback_github import REPOSITORY, set_status, until_through
from tests.fixtures.github import GitHubAppKey
from tests.githubserver.server import CheckRun, GitHubServer, GitHubState
from tests.helpers import webhook_headers

DIGEST = "sha256:" + "ab" * 32
SECRET = "npm-token-4f9a1c77e2"


@pytest.fixture
def service_id(
    database: Database, settings: Settings, github_server: GitHubServer, github_app: GitHubApp
) -> int:
    """A service tracking main, its production environment at an address."""
    with database.session_scope() as session:
        session.add(Installation(id=1, account_login="Codertocat"))
        session.add(
            Repository(
                id=github_server.state.repository(REPOSITORY).id,
                installation_id=1,
                full_name=REPOSITORY,
            )
        )
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository=REPOSITORY, branch="main", host="web-1"
            ),
            "test",
        )
        pushes.production_environment(session, service).address = "127.0.0.1:8080"
        variables.set_variable(
            session,
            SecretBox.from_settings(settings),
            service.id,
            name="NPM_TOKEN",
            value=SECRET,
            kind="build",
            actor="test",
        )
        return service.id


@pytest.fixture
def github_app(github_server: GitHubServer, github_app_key: GitHubAppKey) -> GitHubApp:
    state = github_server.state
    state.add_installation(1, "Codertocat")
    state.add_repository(1, REPOSITORY, "main")
    state.commit(REPOSITORY, {"index.html": "main\n"})
    return GitHubApp(github_app_key.app_id, github_app_key.private_key_pem, github_server.url)


def new_build(database: Database, state: GitHubState, service_id: int, text: str) -> int:
    sha = state.commit(REPOSITORY, {"index.html": text})
    with database.session_scope() as session:
        service = catalog.get_service(session, service_id)
        build = pushes.start_build(
            session, service, pushes.production_environment(session, service), sha, branch="main"
        )
        assert build is not None
        session.flush()
        return build.id


def event(github: GitHubApp, settings: Settings, name: str, object_id: int) -> Callable[..., None]:
    return lambda session: feedback.send(session, github, settings, name, object_id)


def feedback_rows(session: Session) -> list[list[object]]:
    """The GitHub feedback this transaction wrote to the outbox so far."""
    return [message.args for message in effects.pending(session, effects.Kind.FEEDBACK)]


def run_steps(
    database: Database, github: GitHubApp, settings: Settings, state: GitHubState, build_id: int
) -> tuple[int, list[str]]:
    """Each step claimed (its build_running event sent, as the claim notes it) and
    finished, the images recorded. How many event runs failed, and the Check Run's title
    after each step's event."""
    failed = until_through(database, event(github, settings, "build_queued", build_id))
    titles: list[str] = []
    for step in STEPS[:-1]:
        with database.session_scope() as session:
            stepclaims.claim_step(session, build_id, step, 1, "worker-1")
            assert ["build_running", build_id] in feedback_rows(session)
        failed += until_through(database, event(github, settings, "build_running", build_id))
        titles += [run.output["title"] for run in runs_of(state, build_id)]
        with database.session_scope() as session:
            builds.finish_step(session, build_id, step, 1, succeeded=True)
            if step == "push":
                session.get(Build, build_id).images = {  # type: ignore[union-attr]
                    "app": {"repository": "registry.test/hello", "tag": "t1", "digest": DIGEST}
                }
    return failed, titles


def deploy(
    database: Database, github: GitHubApp, settings: Settings, build_id: int
) -> tuple[int, int]:
    """Record the build's deployment and report it active (the agent's part, by hand):
    how many event runs failed, and the deployment's id."""
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        deployment = record_deployment(session, build.service_id, build_id, "test")
        previous = session.scalars(
            select(Deployment).where(
                Deployment.environment_id == deployment.environment_id,
                Deployment.id != deployment.id,
                Deployment.status == "active",
            )
        )
        for other in previous:
            other.status = "superseded"
        deployment.status, deployment.activated_at = "active", utcnow()
        deployment_id = deployment.id
    failed = until_through(database, event(github, settings, "deployment_active", deployment_id))
    return failed, deployment_id


def runs_of(state: GitHubState, build_id: int) -> list[CheckRun]:
    return [run for run in state.check_runs if run.external_id == str(build_id)]


@pytest.mark.parametrize("after", [False, True], ids=["before-acting", "after-acting"])
def test_a_production_build_is_one_check_run_and_one_github_deployment_through_failures(
    database: Database,
    settings: Settings,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
    after: bool,
) -> None:
    state = github_server.state
    build_id = new_build(database, state, service_id, "v1\n")
    fault = state.fail_each_write_once(after=after)
    failed, titles = run_steps(database, github_app, settings, state, build_id)
    (run,) = runs_of(state, build_id)
    assert run.status == "in_progress"
    failed += deploy(database, github_app, settings, build_id)[0]
    assert fault.failed >= failed >= 6

    (run,) = runs_of(state, build_id)
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None and build.check_run_id == run.id
        sha = build.commit_sha
    assert (run.name, run.head_sha, run.status, run.conclusion) == (
        githubwrites.CHECK_NAME,
        sha,
        "completed",
        "success",
    )
    assert urlsplit(run.details_url or "").path == f"/builds/{build_id}"
    summary = run.output["summary"]
    for step in STEPS:
        assert f"| {step} | succeeded |" in summary
    assert f"- `app`: `registry.test/hello@{DIGEST}`" in summary
    # Each step named while it ran, in order.
    assert titles == [f"Step {n + 1} of 5: {step}" for n, step in enumerate(STEPS[:-1])]

    (deployment,) = state.deployments
    assert (deployment.environment, deployment.sha) == ("hello", sha)
    assert deployment.production_environment and not deployment.transient_environment
    own = [s.state for s in state.deployment_statuses if s.deployment_id == deployment.id]
    assert own[0] == "queued" and own[-1] == "success" and "in_progress" in own
    assert state.deployment_statuses[-1].environment_url == "http://127.0.0.1:8080"
    mine = [s.state for s in state.statuses if s.sha == sha]
    assert mine[0] == "pending" and mine[-1] == "success"

    # The same events again (redelivered tasks) make nothing new.
    counts = (len(state.check_runs), len(state.deployments))
    until_through(database, event(github_app, settings, "build_queued", build_id))
    assert (len(state.check_runs), len(state.deployments)) == counts
    assert runs_of(state, build_id)[0].conclusion == "success"


def test_another_apps_run_of_the_same_name_and_external_id_is_not_taken_for_ours(
    database: Database,
    settings: Settings,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    """Anyone's App can name a run "Portside" with a build's id: the lookup counts only
    the Portside App's runs (GitHub would refuse editing another's)."""
    state = github_server.state
    build_id = new_build(database, state, service_id, "v1\n")
    with database.session_scope() as session:
        sha = session.scalar(select(Build.commit_sha).where(Build.id == build_id))
    assert sha is not None
    planted = CheckRun(
        id=state.next_id(),
        repo=REPOSITORY,
        head_sha=sha,
        name=githubwrites.CHECK_NAME,
        external_id=str(build_id),
        details_url=None,
        status="completed",
        conclusion="success",
        started_at=utcnow(),
        completed_at=utcnow(),
        output={"title": "All good", "summary": "trust me"},
        check_suite_id=state.next_id(),
        app_id=state.app_id + 1,
    )
    state.check_runs.append(planted)
    until_through(database, event(github_app, settings, "build_queued", build_id))

    ours = [r for r in runs_of(state, build_id) if r.app_id == state.app_id]
    assert len(ours) == 1 and ours[0].status == "queued"
    assert (planted.status, planted.output["title"]) == ("completed", "All good")
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None and build.check_run_id == ours[0].id


def test_a_new_production_deployment_makes_the_one_it_replaces_inactive(
    database: Database,
    settings: Settings,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    """GitHub's auto_inactive leaves production alone: Portside marks it, once."""
    state = github_server.state
    first = new_build(database, state, service_id, "v1\n")
    run_steps(database, github_app, settings, state, first)
    deploy(database, github_app, settings, first)
    second = new_build(database, state, service_id, "v2\n")
    run_steps(database, github_app, settings, state, second)
    _failed, deployment_id = deploy(database, github_app, settings, second)
    redelivered = event(github_app, settings, "deployment_active", deployment_id)
    until_through(database, redelivered)

    old, new = state.deployments
    statuses = {
        d.id: [s.state for s in state.deployment_statuses if s.deployment_id == d.id]
        for d in (old, new)
    }
    assert statuses[old.id][-2:] == ["success", "inactive"]
    assert statuses[old.id].count("inactive") == 1
    assert statuses[new.id][-1] == "success"


def test_a_failed_builds_check_run_holds_the_failing_steps_last_lines_masked(
    database: Database,
    settings: Settings,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    state = github_server.state
    build_id = new_build(database, state, service_id, "broken\n")
    until_through(database, event(github_app, settings, "build_queued", build_id))
    with database.session_scope() as session:
        stepclaims.claim_step(session, build_id, "clone", 1, "worker-1")
        builds.finish_step(session, build_id, "clone", 1, succeeded=True)
        stepclaims.claim_step(session, build_id, "build", 1, "worker-1")
        builds.finish_step(
            session, build_id, "build", 1, succeeded=False, error=f"npm ERR! 401 {SECRET}"
        )
        build = session.get(Build, build_id)
        assert build is not None
        build.images = {"app": {"repository": "registry.test/hello", "tag": "t", "digest": DIGEST}}
        build.log = "\n".join(
            [f"early line {n}" for n in range(100)]
            + ["x" * 5000, "```", f"npm ERR! token {SECRET}"]
        )
    until_through(database, event(github_app, settings, "build_failed", build_id))

    (run,) = runs_of(state, build_id)
    assert (run.status, run.conclusion) == ("completed", "failure")
    assert run.output["title"].startswith("build failed: npm ERR! 401")
    summary = run.output["summary"]
    assert "**build failed**" in summary and "| clone | succeeded |" in summary
    assert "| build | failed |" in summary and "| push | skipped |" in summary
    assert f"npm ERR! token {MASK}" in summary and "early line 99" in summary
    assert "early line 61" not in summary  # only the last lines
    assert "````" in summary  # a fence the log's own ``` does not close
    assert "x" * 1000 in summary and "x" * 1001 not in summary  # a long line is cut
    assert SECRET not in json.dumps(run.output)


def test_a_superseded_build_ends_its_status_check_run_and_deployment(
    database: Database,
    settings: Settings,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    state = github_server.state
    older = new_build(database, state, service_id, "v1\n")
    until_through(database, event(github_app, settings, "build_queued", older))
    newer = new_build(database, state, service_id, "v2\n")
    with database.session_scope() as session:
        build = session.get(Build, newer)
        assert build is not None
        assert builds.supersede_older(session, build) == [older]
        assert ["build_cancelled", older] in feedback_rows(session)
    until_through(database, event(github_app, settings, "build_cancelled", older))
    # A late queued event for it says nothing any more.
    until_through(database, event(github_app, settings, "build_queued", older))

    with database.session_scope() as session:
        sha = session.scalar(select(Build.commit_sha).where(Build.id == older))
    statuses = [s for s in state.statuses if s.sha == sha]
    assert [s.state for s in statuses] == ["pending", "error"]
    assert (statuses[-1].description or "").startswith(f"Superseded: superseded by build {newer}")
    (run,) = runs_of(state, older)
    assert (run.status, run.conclusion) == ("completed", "cancelled")
    (deployment,) = state.deployments
    own = [s.state for s in state.deployment_statuses if s.deployment_id == deployment.id]
    assert own == ["queued", "inactive"]


def test_a_build_superseded_at_deploy_time_is_neutral(
    database: Database,
    settings: Settings,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    """It built, but a newer build was deployed first: neither failed nor pending."""
    state = github_server.state
    older = new_build(database, state, service_id, "v1\n")
    newer = new_build(database, state, service_id, "v2\n")
    for build_id in (newer, older):
        run_steps(database, github_app, settings, state, build_id)
    deploy(database, github_app, settings, newer)
    with database.session_scope() as session:
        build = session.get(Build, older)
        assert build is not None
        record_deployment(session, build.service_id, older, "test")
        assert build.status == "superseded"
    until_through(database, event(github_app, settings, "build_cancelled", older))

    (run,) = runs_of(state, older)
    assert run.conclusion == "neutral" and "already deployed" in run.output["title"]
    with database.session_scope() as session:
        sha = session.scalar(select(Build.commit_sha).where(Build.id == older))
    assert [s.state for s in state.statuses if s.sha == sha][-1] == "error"


def post_check_run(client: FlaskClient, payload: dict[str, object], guid: str) -> int:
    body = json.dumps(payload).encode()
    response = client.post(
        "/webhooks/github", data=body, headers=webhook_headers("check_run", body, guid=guid)
    )
    assert response.status_code in (200, 202), response.json
    return int(response.json["id"])  # type: ignore[index]


def test_rerequesting_the_check_run_rebuilds_that_commit_once(
    client: FlaskClient,
    database: Database,
    settings: Settings,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
) -> None:
    state = github_server.state
    build_id = new_build(database, state, service_id, "v1\n")
    until_through(database, event(github_app, settings, "build_queued", build_id))
    set_status(database, build_id, "failed")
    with database.session_scope() as session:
        session.get(Build, build_id).ref = "v1.2.0"  # type: ignore[union-attr]  # deployed by ref
    (run,) = runs_of(state, build_id)

    def process(delivery_id: int) -> list[int]:
        with database.session_scope() as session:
            return deliveries.process(session, delivery_id, HandlerContext(github_app)).builds

    payload = state.check_run_payload(run, "rerequested", github_server.url)
    delivery_id = post_check_run(client, payload, "rerun-1")
    (rebuilt,) = process(delivery_id)
    assert post_check_run(client, payload, "rerun-1") == delivery_id  # a redelivery
    assert process(delivery_id) == []
    with database.session_scope() as session:
        old, new = (session.get(Build, i) for i in (build_id, rebuilt))
        assert old is not None and new is not None
        assert (new.commit_sha, new.environment_id, new.status) == (
            old.commit_sha,
            old.environment_id,
            "queued",
        )
        assert new.author == "octocat" and new.ref == "v1.2.0"

    # Another app's run, an action other than rerequested, or the run of a commit that is
    # no longer the head (a newer push came) starts nothing.
    foreign = json.loads(json.dumps(payload))
    foreign["check_run"]["name"] = "ci/lint"
    impostor = json.loads(json.dumps(payload))  # another App's run named Portside
    impostor["check_run"]["app"]["id"] = state.app_id + 1
    assert process(post_check_run(client, impostor, "impostor")) == []  # on the head, still
    completed = json.loads(json.dumps(payload)) | {"action": "completed"}
    newer = new_build(database, state, service_id, "v2\n")
    for guid, other in (("lint", foreign), ("done", completed), ("old", payload)):
        assert process(post_check_run(client, other, guid)) == []
    with database.session_scope() as session:
        count = len(session.scalars(select(Build.id)).all())
        environments = session.scalars(select(Environment.id)).all()
        outcome = session.scalar(
            select(WebhookDelivery.outcome).where(WebhookDelivery.guid == "old")
        )
    assert count == 3 and len(environments) == 1 and newer not in (build_id, rebuilt)
    assert outcome is not None and "no longer the head" in outcome


def test_without_the_checks_permission_statuses_and_deployments_still_go_out(
    database: Database,
    settings: Settings,
    github_app: GitHubApp,
    github_server: GitHubServer,
    service_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An installation of an App made before Check Runs has not granted ``checks: write``
    until its owner accepts it: GitHub refuses the run (403), and everything else is sent
    all the same, with a warning saying what to grant."""
    state = github_server.state
    del state.installations[1].permissions["checks"]
    build_id = new_build(database, state, service_id, "no checks\n")

    failed, _titles = run_steps(database, github_app, settings, state, build_id)
    failed += deploy(database, github_app, settings, build_id)[0]

    assert failed == 0
    assert state.check_runs == []
    assert [status.state for status in state.statuses][-1] == "success"
    assert [status.state for status in state.deployment_statuses][-1] == "success"
    assert "grant the App 'checks: write'" in caplog.text
