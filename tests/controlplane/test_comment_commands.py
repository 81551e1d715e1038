"""Commands from GitHub comments: ``/portside approve | redeploy | preview`` in a pull
request comment or a commit comment, signed deliveries through ``/webhooks/github``,
processed against PostgreSQL, the commenter's permission asked of the test GitHub server
(its real endpoint, faults included) and the answer a reaction on the comment."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.errors import TransientError
from controlplane.github.app import GitHubApp
from controlplane.models import (
    AuditEvent,
    Build,
    Environment,
    Installation,
    Repository,
    WebhookDelivery,
)
from controlplane.services import (
    catalog,
    commands,
    deliveries,
    feedback,
    hosts,
    previews,
    pushes,
    servicerules,
)
from controlplane.services.outcomes import HandlerContext
from controlplane.settings import Settings
from tests.controlplane.test_feedback_checks import github_app  # noqa: F401  # a fixture
from tests.controlplane.test_feedback_github import REPOSITORY, until_through
from tests.githubserver.server import GitHubServer
from tests.helpers import webhook_headers

PR = 7
WRITER = "maintainer"
READER = "passer-by"


@pytest.fixture
def service_id(database: Database, github_server: GitHubServer, github_app: GitHubApp) -> int:  # noqa: F811
    """Service ``hello`` tracking main with previews (forks' too) on an untrusted host;
    ``maintainer`` may maintain the repository, ``passer-by`` only read it."""
    state = github_server.state
    state.add_collaborator(REPOSITORY, WRITER, "maintain")
    state.add_collaborator(REPOSITORY, READER, "read")
    with database.session_scope() as session:
        session.add(Installation(id=1, account_login="Codertocat"))
        session.add(
            Repository(id=state.repository(REPOSITORY).id, installation_id=1, full_name=REPOSITORY)
        )
        hosts.create_host(session, "web-1", "test")
        hosts.create_host(session, "sandbox-1", "test", untrusted=True)
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository=REPOSITORY, branch="main", host="web-1"
            ),
            "test",
        )
        return service.id


def fork_pull_request(github_server: GitHubServer) -> str:
    """Pull request #7 from a fork into main; its head commit."""
    state = github_server.state
    head = state.commit(REPOSITORY, {"index.html": "from a fork\n"}, branch="fork-change")
    state.add_pull_request(
        REPOSITORY, PR, "fork-change", base_ref="main", head_full_name="someone/Hello-World"
    )
    return head


def _person(login: str, kind: str = "User") -> dict[str, Any]:
    return {"login": login, "id": abs(hash(login)) % 10**8, "type": kind, "site_admin": False}


def pr_comment_payload(
    github_server: GitHubServer, author: str, body: str, *, kind: str = "User"
) -> dict[str, Any]:
    """An ``issue_comment`` ``created`` delivery for a comment on the pull request, in
    GitHub's shape (octokit/webhooks' ``issue_comment/created``: the issue carries a
    ``pull_request`` object when it is one)."""
    state = github_server.state
    comment = state.add_issue_comment(REPOSITORY, PR, body, author)
    api = f"{github_server.url}/repos/{REPOSITORY}"
    return {
        "action": "created",
        "issue": {
            "url": f"{api}/issues/{PR}",
            "number": PR,
            "title": f"Pull request {PR}",
            "user": _person("someone"),
            "state": "open",
            "locked": False,
            "pull_request": {
                "url": f"{api}/pulls/{PR}",
                "html_url": f"{github_server.url}/{REPOSITORY}/pull/{PR}",
                "diff_url": f"{github_server.url}/{REPOSITORY}/pull/{PR}.diff",
                "patch_url": f"{github_server.url}/{REPOSITORY}/pull/{PR}.patch",
                "merged_at": None,
            },
            "body": "A change from a fork",
        },
        "comment": {
            "url": f"{api}/issues/comments/{comment.id}",
            "id": comment.id,
            "user": _person(author, kind),
            "created_at": comment.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_at": comment.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "author_association": "COLLABORATOR",
            "performed_via_github_app": None,
            "body": body,
        },
        "repository": github_server.repository_json(REPOSITORY),
        "sender": _person(author, kind),
        "installation": {"id": 1, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
    }


def commit_comment_payload(
    github_server: GitHubServer, author: str, sha: str, body: str
) -> dict[str, Any]:
    """A ``commit_comment`` ``created`` delivery (octokit/webhooks' shape)."""
    comment = github_server.state.add_commit_comment(REPOSITORY, sha, body, author)
    return {
        "action": "created",
        "comment": {
            "url": f"{github_server.url}/repos/{REPOSITORY}/comments/{comment.id}",
            "id": comment.id,
            "user": _person(author),
            "position": None,
            "line": None,
            "path": None,
            "commit_id": sha,
            "created_at": comment.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_at": comment.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "author_association": "COLLABORATOR",
            "body": body,
        },
        "repository": github_server.repository_json(REPOSITORY),
        "sender": _person(author),
        "installation": {"id": 1, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
    }


def post(client: FlaskClient, event: str, payload: dict[str, Any]) -> int:
    body = json.dumps(payload).encode()
    response = client.post("/webhooks/github", data=body, headers=webhook_headers(event, body))
    assert response.status_code in (200, 202), response.json
    return int(response.json["id"])  # type: ignore[index]


def process(database: Database, github: GitHubApp, delivery_id: int) -> tuple[str, str, list[int]]:
    """Process a delivery as the control task does: its status, outcome and the builds it
    started."""
    with database.session_scope() as session:
        started = deliveries.process(session, delivery_id, HandlerContext(github, "previews.test"))
    with database.session_scope() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        return delivery.status, delivery.outcome or "", started.builds


@pytest.fixture
def say(
    client: FlaskClient,
    database: Database,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
) -> Callable[[str, str], tuple[str, str, list[int]]]:
    """Comment on the pull request as someone and process the delivery."""

    def comment(author: str, body: str) -> tuple[str, str, list[int]]:
        payload = pr_comment_payload(github_server, author, body)
        return process(database, github_app, post(client, "issue_comment", payload))

    return comment


def commanded(database: Database) -> list[dict[str, Any]]:
    """The audit trail of commands, oldest first, with their actors."""
    with database.session_scope() as session:
        rows = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == commands.AUDIT_ACTION)
            .order_by(AuditEvent.id)
        )
        return [{"actor": row.actor, "id": row.id, **row.detail} for row in rows]


def answer(database: Database, github: GitHubApp, settings: Settings, audit_id: int) -> None:
    until_through(
        database,
        lambda session: feedback.send(session, github, settings, commands.ANSWER_EVENT, audit_id),
    )


def preview(database: Database) -> Environment | None:
    with database.session_scope() as session:
        found = session.scalar(select(Environment).where(Environment.pr_number == PR))
        if found is not None:
            session.expunge(found)
        return found


def test_parse_takes_the_first_line_and_the_exact_command() -> None:
    assert commands.parse("/portside approve") == "approve"
    assert commands.parse("  /portside   redeploy \nplease") == "redeploy"
    assert commands.parse("/portside preview\n/portside approve") == "preview"
    assert commands.parse("/portside approve now") == ""
    assert commands.parse("/portside deploy") == ""
    assert commands.parse("/portside") == ""
    assert commands.parse("LGTM\n/portside approve") is None
    assert commands.parse("/portsideapprove") is None
    assert commands.parse("") is None


def test_a_writer_previews_and_approves_a_fork_pr_a_reader_changes_nothing(
    client: FlaskClient,
    database: Database,
    settings: Settings,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
    service_id: int,
    say: Callable[[str, str], tuple[str, str, list[int]]],
) -> None:
    state = github_server.state
    head = fork_pull_request(github_server)

    # A reader's /portside preview: nothing is created, the attempt is audited.
    status, outcome, started = say(READER, "/portside preview")
    assert (status, started, preview(database)) == ("ignored", [], None)
    assert "may not write (read)" in outcome

    # The writer's /portside preview opens the fork's preview, which waits for approval.
    status, outcome, started = say(WRITER, "/portside preview")
    env = preview(database)
    assert env is not None and (status, started) == ("processed", [])
    assert (env.status, env.head_sha, env.from_fork) == ("awaiting_approval", head, True)

    # A reader's /portside approve releases nothing and is audited.
    status, outcome, started = say(READER, "/portside approve")
    env = preview(database)
    assert env is not None and (status, started) == ("ignored", [])
    assert (env.status, env.approved_sha) == ("awaiting_approval", None)

    # The writer's /portside approve builds the head, untrusted, and answers with +1.
    status, outcome, started = say(WRITER, "/portside approve")
    env = preview(database)
    assert env is not None and status == "processed" and len(started) == 1
    assert env.approved_sha == head
    with database.session_scope() as session:
        build = session.get(Build, started[0])
        assert build is not None
        assert (build.commit_sha, build.untrusted, build.environment_id) == (head, True, env.id)

    trail = commanded(database)
    assert [(t["actor"], t["command"], t["result"], t["permission"]) for t in trail] == [
        (f"github:{READER}", "preview", "ignored", "read"),
        (f"github:{WRITER}", "preview", "done", "write"),
        (f"github:{READER}", "approve", "ignored", "read"),
        (f"github:{WRITER}", "approve", "done", "write"),
    ]
    for row in trail:
        answer(database, github_app, settings, row["id"])
    answer(database, github_app, settings, trail[-1]["id"])  # a retry adds no reaction
    reacted = [(r.subject, r.comment_id, r.content) for r in state.reactions]
    assert reacted == [
        ("issue_comment", trail[1]["comment"], "+1"),
        ("issue_comment", trail[3]["comment"], "+1"),
    ]

    # The writer's /portside redeploy builds the approved head again.
    status, outcome, started = say(WRITER, "/portside redeploy")
    assert status == "processed" and len(started) == 1 and started[0] != build.id


def test_bots_other_comments_and_unknown_commands(
    client: FlaskClient,
    database: Database,
    settings: Settings,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
    service_id: int,
) -> None:
    fork_pull_request(github_server)
    bot = pr_comment_payload(github_server, "portside-test[bot]", "/portside preview", kind="Bot")
    chat = pr_comment_payload(github_server, WRITER, "Looks good to me")
    unknown = pr_comment_payload(github_server, WRITER, "/portside deploy-everything")
    edited = pr_comment_payload(github_server, WRITER, "/portside preview") | {"action": "edited"}
    results = [
        process(database, github_app, post(client, "issue_comment", payload))
        for payload in (bot, chat, unknown, edited)
    ]
    assert [(status, started) for status, _outcome, started in results] == [("ignored", [])] * 4
    assert preview(database) is None
    # Only the unknown command is audited (a Bot, a chat and an edit are not commands).
    (row,) = commanded(database)
    assert (row["actor"], row["command"], row["result"]) == (
        f"github:{WRITER}",
        "/portside deploy-everything",
        "ignored",
    )
    answer(database, github_app, settings, row["id"])
    assert github_server.state.reactions == []


def test_the_permission_check_honours_github_failures(
    client: FlaskClient,
    database: Database,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
    service_id: int,
) -> None:
    """A 5xx from the permission endpoint leaves the delivery to be retried; nothing is
    approved or audited until GitHub answered."""
    fork_pull_request(github_server)
    delivery_id = post(
        client, "issue_comment", pr_comment_payload(github_server, WRITER, "/portside preview")
    )
    fault = github_server.state.fail(
        f"/repos/{REPOSITORY}/collaborators/*/permission", method="GET"
    )
    with pytest.raises(TransientError), database.session_scope() as session:
        deliveries.process(session, delivery_id, HandlerContext(github_app, "previews.test"))
    assert fault.failed == 1 and commanded(database) == [] and preview(database) is None
    status, _outcome, _started = process(database, github_app, delivery_id)
    env = preview(database)
    assert status == "processed" and env is not None and env.status == "awaiting_approval"


def test_a_commit_comment_redeploys_production_and_approves_what_waits_for_it(
    client: FlaskClient,
    database: Database,
    settings: Settings,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
    service_id: int,
) -> None:
    state = github_server.state
    state.installations[1].permissions["contents"] = "write"  # reactions on commit comments
    old = state.commit(REPOSITORY, {"index.html": "v1\n"})
    sha = state.commit(REPOSITORY, {"index.html": "v2\n"})
    with database.session_scope() as session:
        service = catalog.get_service(session, service_id)
        production = pushes.production_environment(session, service)
        for commit in (old, sha):
            assert pushes.start_build(session, service, production, commit, branch="main")

    # A redeploy on an older commit does nothing; on production's head it builds again.
    stale = commit_comment_payload(github_server, WRITER, old, "/portside redeploy")
    status, outcome, started = process(database, github_app, post(client, "commit_comment", stale))
    assert (status, started) == ("processed", []) and "failed: nothing to redeploy" in outcome
    reader = commit_comment_payload(github_server, READER, sha, "/portside redeploy")
    assert process(database, github_app, post(client, "commit_comment", reader))[2] == []
    writer = commit_comment_payload(github_server, WRITER, sha, "/portside redeploy")
    status, outcome, started = process(database, github_app, post(client, "commit_comment", writer))
    assert status == "processed" and len(started) == 1
    with database.session_scope() as session:
        build = session.get(Build, started[0])
        assert build is not None and (build.commit_sha, build.author) == (sha, f"github:{WRITER}")

    trail = commanded(database)
    assert [(t["sha"], t["result"]) for t in trail] == [
        (old, "failed"),
        (sha, "ignored"),
        (sha, "done"),
    ]
    for row in trail:
        answer(database, github_app, settings, row["id"])
    assert [(r.subject, r.comment_id, r.content) for r in state.reactions] == [
        ("commit_comment", trail[0]["comment"], "confused"),
        ("commit_comment", trail[2]["comment"], "+1"),
    ]


def test_a_commit_comment_approves_the_fork_preview_waiting_for_that_commit(
    client: FlaskClient,
    database: Database,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
    service_id: int,
    say: Callable[[str, str], tuple[str, str, list[int]]],
) -> None:
    head = fork_pull_request(github_server)
    say(WRITER, "/portside preview")
    other = commit_comment_payload(github_server, WRITER, "c" * 40, "/portside approve")
    assert process(database, github_app, post(client, "commit_comment", other))[2] == []
    right = commit_comment_payload(github_server, WRITER, head, "/portside approve")
    status, _outcome, started = process(database, github_app, post(client, "commit_comment", right))
    env = preview(database)
    assert status == "processed" and len(started) == 1
    assert env is not None and env.approved_sha == head


def test_a_pr_approve_written_before_the_last_push_approves_nothing(
    client: FlaskClient,
    database: Database,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
    service_id: int,
    say: Callable[[str, str], tuple[str, str, list[int]]],
) -> None:
    """The comment approves the head its writer saw: a head that reached Portside in a
    later second than the comment was not reviewed."""
    fork_pull_request(github_server)
    say(WRITER, "/portside preview")
    late = pr_comment_payload(github_server, WRITER, "/portside approve")
    late["comment"]["created_at"] = "2020-01-01T00:00:00Z"  # written before the preview opened
    status, outcome, started = process(database, github_app, post(client, "issue_comment", late))
    env = preview(database)
    assert (status, started) == ("processed", []) and "moved on after the comment" in outcome
    assert env is not None and (env.status, env.approved_sha) == ("awaiting_approval", None)
    assert commanded(database)[-1]["result"] == "failed"


def test_preview_brings_back_a_preview_closed_for_idleness_where_previews_are_on(
    database: Database,
    github_server: GitHubServer,
    service_id: int,
    say: Callable[[str, str], tuple[str, str, list[int]]],
) -> None:
    state = github_server.state
    head = state.commit(REPOSITORY, {"index.html": "a change\n"}, branch="change")
    state.add_pull_request(REPOSITORY, PR, "change", base_ref="main")
    status, _outcome, (first,) = say(WRITER, "/portside preview")
    env = preview(database)
    assert status == "processed" and env is not None and env.head_sha == head
    with database.session_scope() as session:
        closing = session.get(Environment, env.id)
        assert closing is not None
        previews.teardown(session, closing, "portside", "idle for more than 1 day")

    status, _outcome, (again,) = say(WRITER, "/portside preview")
    env = preview(database)
    assert status == "processed" and again != first
    assert env is not None and env.status != "inactive" and env.closed_at is None
    with database.session_scope() as session:
        build = session.get(Build, again)
        assert build is not None and (build.commit_sha, build.untrusted) == (head, False)

    with database.session_scope() as session:
        catalog.get_service(session, service_id).previews_enabled = False
    status, outcome, started = say(WRITER, "/portside preview")
    assert (status, started) == ("processed", []) and "failed: no service previews" in outcome


def test_a_waiting_fork_previews_comment_offers_the_command(
    database: Database,
    settings: Settings,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
    service_id: int,
    say: Callable[[str, str], tuple[str, str, list[int]]],
) -> None:
    fork_pull_request(github_server)
    say(WRITER, "/portside preview")
    env = preview(database)
    assert env is not None and env.status == "awaiting_approval"
    until_through(
        database,
        lambda session: feedback.send(session, github_app, settings, "awaiting_approval", env.id),
    )
    (ours,) = [c for c in github_server.state.comments if not c.author]
    assert "comment `/portside approve` here" in ours.body
