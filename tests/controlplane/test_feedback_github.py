"""Feedback on a GitHub that fails: every write fails once, before or after GitHub acted,
rate limits, expired tokens. Each event runs again after a transient failure, as the
feedback task does, and GitHub ends with one deployment, one comment, a final status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.errors import TransientError
from controlplane.github.app import GitHubApp, GitHubRateLimited
from controlplane.models import Build, Deployment, Environment, Installation, Repository
from controlplane.services import catalog, feedback, githubwrites, hosts, servicerules, tokens
from controlplane.services.pushes import start_build
from controlplane.settings import Settings
from tasks import pipeline
from tests.fixtures.github import GitHubAppKey
from tests.fixtures.stack import Stack, wait_for
from tests.githubserver.server import Deployment as GitHubDeploymentRecord
from tests.githubserver.server import GitHubServer, GitHubState, IssueComment

REPOSITORY = "Codertocat/Hello-World"
PR = 5


@pytest.fixture
def github(github_server: GitHubServer, github_app_key: GitHubAppKey) -> GitHubApp:
    state = github_server.state
    state.add_installation(1, "Codertocat")
    state.add_repository(1, REPOSITORY, "main")
    state.commit(REPOSITORY, {"index.html": "main\n"})
    return GitHubApp(github_app_key.app_id, github_app_key.private_key_pem, github_server.url)


@pytest.fixture
def preview(database: Database, github: GitHubApp, github_server: GitHubServer) -> tuple[int, int]:
    """A pull request's preview and its queued build: (build id, deployment id)."""
    state = github_server.state
    head = state.commit(REPOSITORY, {"index.html": "preview\n"}, branch="feature")
    state.add_pull_request(REPOSITORY, PR, "feature", base_ref="main")
    with database.session_scope() as session:
        session.add(Installation(id=1, account_login="Codertocat"))
        session.add(Repository(id=4242, installation_id=1, full_name=REPOSITORY))
        host, _token = hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository=REPOSITORY, branch="main", host="web-1"
            ),
            "test",
        )
        environment = Environment(
            service_id=service.id,
            host_id=host.id,
            name=f"hello-pr-{PR}",
            kind="preview",
            branch="feature",
            head_sha=head,
            pr_number=PR,
            address="127.0.0.1:8080",
        )
        session.add(environment)
        session.flush()
        build = start_build(session, service, environment, head, branch="feature")
        assert build is not None
        deployment = Deployment(environment_id=environment.id, build_id=build.id)
        session.add(deployment)
        session.flush()
        return build.id, deployment.id


def until_through(database: Database, run: Callable[..., None], attempts: int = 8) -> int:
    """Run one feedback event as the task does: in a transaction of its own, again after
    each transient failure. Returns how many runs failed."""
    for failed in range(attempts):
        try:
            with database.session_scope() as session:
                run(session)
            return failed
        except TransientError:
            continue
    raise AssertionError(f"the event did not get through in {attempts} runs")


def set_status(database: Database, build_id: int, status: str) -> None:
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        build.status = status


def run_preview_events(
    database: Database,
    github: GitHubApp,
    settings: Settings,
    ids: tuple[int, int],
) -> int:
    """A preview's whole life on GitHub: queued, running, deployed; how many runs failed."""
    build_id, deployment_id = ids

    def event(name: str, object_id: int) -> Callable[..., None]:
        return lambda session: feedback.send(session, github, settings, name, object_id)

    failed = until_through(database, event("build_queued", build_id))
    set_status(database, build_id, "running")
    failed += until_through(database, event("build_running", build_id))
    set_status(database, build_id, "succeeded")
    failed += until_through(database, event("deployment_active", deployment_id))
    return failed


def assert_one_of_each(state: GitHubState, build_id: int, environment: str, sha: str) -> None:
    (deployment,) = state.deployments
    assert (deployment.sha, deployment.environment) == (sha, environment)
    assert deployment.payload[githubwrites.PAYLOAD_KEY]["environment"] > 0
    own = [s.state for s in state.deployment_statuses if s.deployment_id == deployment.id]
    assert own[-1] == "success"
    (comment,) = state.comments
    assert comment.body.startswith(githubwrites.COMMENT_MARKER.format(name=environment))
    assert sha[:7] in comment.body
    mine = [s for s in state.statuses if s.context == githubwrites.CONTEXT and s.sha == sha]
    assert mine[0].state == "pending" and mine[-1].state == "success"


@pytest.mark.parametrize("after", [False, True], ids=["before-acting", "after-acting"])
def test_each_write_failing_once_still_leaves_one_deployment_one_comment_and_success(
    database: Database,
    settings: Settings,
    github: GitHubApp,
    github_server: GitHubServer,
    preview: tuple[int, int],
    after: bool,
) -> None:
    state = github_server.state
    fault = state.fail_each_write_once(after=after)
    failed = run_preview_events(database, github, settings, preview)

    assert failed >= 5 and fault.failed >= failed  # each write did fail
    with database.session_scope() as session:
        build = session.get(Build, preview[0])
        assert build is not None
        sha, name = build.commit_sha, build.environment.name
        assert build.github_deployment_id == state.deployments[0].id
    assert_one_of_each(state, preview[0], name, sha)

    # The same events delivered again (a redelivered task) write nothing new.
    counts = (len(state.deployments), len(state.comments))
    run_preview_events(database, github, settings, preview)
    assert (len(state.deployments), len(state.comments)) == counts
    assert_one_of_each(state, preview[0], name, sha)


def test_an_event_whose_answers_were_lost_finds_what_it_wrote(
    database: Database,
    settings: Settings,
    github: GitHubApp,
    github_server: GitHubServer,
    preview: tuple[int, int],
) -> None:
    """A lost answer means no id was kept: the retry finds the deployment by its commit,
    environment and payload, and the comment by its marker."""
    state = github_server.state
    state.fail(f"/repos/{REPOSITORY}/deployments", after=True)
    state.fail(f"/repos/{REPOSITORY}/issues/{PR}/comments", after=True)
    assert run_preview_events(database, github, settings, preview) == 2
    with database.session_scope() as session:
        build = session.get(Build, preview[0])
        assert build is not None
        assert_one_of_each(state, preview[0], build.environment.name, build.commit_sha)
        assert build.environment.github_comment_id == state.comments[0].id


def test_the_comment_is_found_past_the_first_page(
    database: Database,
    settings: Settings,
    github: GitHubApp,
    github_server: GitHubServer,
    preview: tuple[int, int],
) -> None:
    """A busy pull request: Portside's comment, its id lost, is the 131st."""
    state = github_server.state
    now = datetime.now(UTC)
    for _ in range(130):
        state.comments.append(IssueComment(state.next_id(), REPOSITORY, PR, "LGTM", now, now))
    marker = githubwrites.COMMENT_MARKER.format(name=f"hello-pr-{PR}")
    ours = IssueComment(state.next_id(), REPOSITORY, PR, f"{marker}\nold", now, now)
    state.comments.append(ours)
    set_status(database, preview[0], "succeeded")
    with database.session_scope() as session:
        feedback.send(session, github, settings, "deployment_active", preview[1])
    assert len(state.comments) == 131
    assert ours.body.startswith(marker) and "is ready" in ours.body
    pages = [p for _, p in state.api_requests if p.startswith(f"/repos/{REPOSITORY}/issues/{PR}/c")]
    assert len(pages) == 2


def test_a_short_secondary_rate_limit_is_waited_out_and_a_long_one_handed_back(
    database: Database,
    settings: Settings,
    github: GitHubApp,
    github_server: GitHubServer,
    preview: tuple[int, int],
) -> None:
    state = github_server.state
    build_id, deployment_id = preview
    set_status(database, build_id, "succeeded")
    short = state.rate_limit(f"/repos/{REPOSITORY}/statuses/*", method="POST", retry_after=1)
    with database.session_scope() as session:
        feedback.send(session, github, settings, "deployment_active", deployment_id)
    assert short.failed == 1
    assert [s.state for s in state.statuses] == ["success"]

    state.rate_limit(f"/repos/{REPOSITORY}/statuses/*", method="POST", retry_after=600)
    with pytest.raises(GitHubRateLimited) as limited, database.session_scope() as session:
        feedback.send(session, github, settings, "deployment_active", deployment_id)
    assert limited.value.retry_after == 600
    primary = state.rate_limit("*", primary=True, retry_after=2)
    with database.session_scope() as session:
        feedback.send(session, github, settings, "deployment_active", deployment_id)
    assert primary.failed == 1
    assert [s.state for s in state.statuses] == ["success", "success"]


def test_an_expired_token_is_replaced(
    database: Database,
    settings: Settings,
    github: GitHubApp,
    github_server: GitHubServer,
    preview: tuple[int, int],
) -> None:
    state = github_server.state
    with database.session_scope() as session:
        feedback.send(session, github, settings, "build_queued", preview[0])
    state.expire_tokens()  # GitHub says 401 before the cached expiry
    set_status(database, preview[0], "running")
    with database.session_scope() as session:
        feedback.send(session, github, settings, "build_running", preview[0])
    assert len(state.tokens) == 2
    assert [s.state for s in state.deployment_statuses] == ["queued", "in_progress"]


def test_a_late_retry_of_an_early_event_never_turns_success_back(
    database: Database,
    settings: Settings,
    github: GitHubApp,
    github_server: GitHubServer,
    preview: tuple[int, int],
) -> None:
    state = github_server.state
    build_id, deployment_id = preview
    set_status(database, build_id, "succeeded")
    with database.session_scope() as session:
        feedback.send(session, github, settings, "deployment_active", deployment_id)
        feedback.send(session, github, settings, "build_queued", build_id)
        feedback.send(session, github, settings, "build_running", build_id)
    assert [s.state for s in state.statuses] == ["success"]
    assert [s.state for s in state.deployment_statuses] == ["success"]


def test_details_links_open_the_dashboard_build_page_after_logging_in(
    client: FlaskClient,
    database: Database,
    settings: Settings,
    github: GitHubApp,
    github_server: GitHubServer,
    preview: tuple[int, int],
) -> None:
    with database.session_scope() as session:
        feedback.send(session, github, settings, "build_queued", preview[0])
        _row, secret = tokens.create_token(session, "a-person", "read")
    (status,) = github_server.state.statuses
    assert status.target_url is not None
    link = urlsplit(status.target_url)
    assert f"{link.scheme}://{link.netloc}" == settings.url and link.path == f"/builds/{preview[0]}"

    visitor = client.get(link.path)
    assert visitor.status_code == 302
    login = visitor.headers["Location"]
    assert urlsplit(login).path == "/login"
    form = client.get(login)
    assert form.status_code == 200
    logged_in = client.post("/login", data={"token": secret, "next": link.path})
    assert logged_in.status_code == 302 and logged_in.headers["Location"] == link.path
    page = client.get(link.path)
    assert page.status_code == 200
    with database.session_scope() as session:
        sha = session.scalar(select(Build.commit_sha).where(Build.id == preview[0]))
    assert sha is not None and sha[:7] in page.get_data(as_text=True)


@pytest.mark.slow
def test_through_the_control_worker_a_rate_limit_delays_feedback_and_failures_duplicate_nothing(
    stack: Stack, github: GitHubApp, github_server: GitHubServer, preview: tuple[int, int]
) -> None:
    """The real task: writes failing once after GitHub acted are retried with backoff,
    and a secondary rate limit longer than the client waits out comes back after
    GitHub's Retry-After through the task's countdown, not dropped."""
    state = github_server.state
    build_id, deployment_id = preview
    state.fail_each_write_once(after=True)
    limit = state.rate_limit(
        f"/repos/{REPOSITORY}/statuses/*", method="POST", retry_after=12, status=403
    )

    stack.send(pipeline.GITHUB_FEEDBACK, "build_queued", build_id)
    wait_for(lambda: [s for s in state.deployment_statuses if s.state == "queued"], 120, 0.5)
    set_status(stack.database, build_id, "running")
    stack.send(pipeline.GITHUB_FEEDBACK, "build_running", build_id)
    wait_for(lambda: [s for s in state.deployment_statuses if s.state == "in_progress"], 120, 0.5)
    set_status(stack.database, build_id, "succeeded")
    stack.send(pipeline.GITHUB_FEEDBACK, "deployment_active", deployment_id)
    wait_for(lambda: state.statuses and state.statuses[-1].state == "success", 180, 0.5)
    wait_for(lambda: state.comments, 120, 0.5, "the PR comment")

    assert limit.failed == 1  # the first status was rate-limited, then went through
    with stack.database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        assert_one_of_each(state, build_id, build.environment.name, build.commit_sha)


def test_a_strangers_comment_with_the_marker_is_not_taken_for_portsides(
    database: Database,
    settings: Settings,
    github: GitHubApp,
    github_server: GitHubServer,
    preview: tuple[int, int],
) -> None:
    """The marker is plain text anyone reading the PR can copy: another Bot (a workflow's
    github-actions[bot] echoing a contributor's words) writing it first must not become
    the preview's comment, whose text its author could then rewrite at will."""
    state = github_server.state
    now = datetime.now(UTC)
    marker = githubwrites.COMMENT_MARKER.format(name=f"hello-pr-{PR}")
    planted = f"{marker}\nPreview moved: https://phish.example.invalid"
    theirs = IssueComment(
        state.next_id(), REPOSITORY, PR, planted, now, now, author="github-actions[bot]"
    )
    state.comments.append(theirs)
    set_status(database, preview[0], "succeeded")
    with database.session_scope() as session:
        feedback.send(session, github, settings, "deployment_active", preview[1])
    assert theirs.body == planted
    (ours,) = [c for c in state.comments if c is not theirs]
    assert ours.author == "" and ours.body.startswith(marker) and "is ready" in ours.body
    with database.session_scope() as session:
        environment = session.scalars(
            select(Environment).where(Environment.name == f"hello-pr-{PR}")
        ).one()
        assert environment.github_comment_id == ours.id


def test_a_deployment_someone_else_made_with_portsides_payload_is_not_adopted(
    database: Database,
    settings: Settings,
    github: GitHubApp,
    github_server: GitHubServer,
    preview: tuple[int, int],
) -> None:
    """Anyone who may create deployments can copy the payload; Portside reports only on
    deployments its App created."""
    state = github_server.state
    with database.session_scope() as session:
        build = session.get(Build, preview[0])
        assert build is not None
        sha, name, environment_id = build.commit_sha, build.environment.name, build.environment_id
    theirs = GitHubDeploymentRecord(
        id=state.next_id(),
        repo=REPOSITORY,
        sha=sha,
        ref=sha,
        task="deploy",
        environment=name,
        description="not Portside's",
        payload={githubwrites.PAYLOAD_KEY: {"environment": environment_id}},
        transient_environment=True,
        production_environment=False,
        auto_merge=False,
        required_contexts=[],
        created_at=datetime.now(UTC),
        creator="mallory",
    )
    state.deployments.append(theirs)
    run_preview_events(database, github, settings, preview)
    assert not [s for s in state.deployment_statuses if s.deployment_id == theirs.id]
    state.deployments.remove(theirs)
    assert_one_of_each(state, preview[0], name, sha)
