"""``/portside approve`` releases a deployment held for approval (issue 19's "done when"):
production requires approval, a build waits in ``awaiting_approval``; the comment of a
collaborator with write permission releases it, the same comment from a reader does
nothing and is audited. Signed deliveries, the test GitHub's permission endpoint."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import Environment
from tests.controlplane.test_comment_commands import (
    READER,
    WRITER,
    commanded,
    commit_comment_payload,
    post,
    process,
)
from tests.controlplane.test_deploy_gates import (  # noqa: F401  # fixtures among them
    built,
    github_app,
    record,
    service_id,
    state_of,
)
from tests.controlplane.test_feedback_github import REPOSITORY
from tests.githubserver.server import GitHubServer


def test_a_writers_commit_comment_releases_the_held_deployment_a_readers_does_not(
    client: FlaskClient,
    database: Database,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
    service_id: int,  # noqa: F811
) -> None:
    state = github_server.state
    state.add_collaborator(REPOSITORY, WRITER, "write")
    state.add_collaborator(REPOSITORY, READER, "triage")
    with database.session_scope() as session:
        production = session.scalar(select(Environment).where(Environment.kind == "production"))
        assert production is not None
        production.approval_required = True
    build_id = built(database, state, service_id, "v2\n")
    assert record(database, service_id, build_id) is None
    held = state_of(database, build_id)
    assert held["build"] == held["environment"] == "awaiting_approval"

    reader = commit_comment_payload(github_server, READER, held["sha"], "/portside approve")
    status, outcome, _started = process(
        database, github_app, post(client, "commit_comment", reader)
    )
    assert status == "ignored" and "may not write (read)" in outcome
    assert state_of(database, build_id) == held

    writer = commit_comment_payload(github_server, WRITER, held["sha"], "/portside approve")
    status, outcome, _started = process(
        database, github_app, post(client, "commit_comment", writer)
    )
    assert status == "processed" and "deployment" in outcome
    done = state_of(database, build_id)
    assert (done["build"], done["deployed"], done["held"]) == ("succeeded", build_id, None)
    assert [(row["actor"], row["result"]) for row in commanded(database)] == [
        (f"github:{READER}", "ignored"),
        (f"github:{WRITER}", "done"),
    ]
