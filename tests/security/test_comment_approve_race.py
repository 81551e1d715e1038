"""``/portside approve`` on a pull request approves the head its writer saw on GitHub, never
an older one Portside still holds because the push's delivery has not been processed yet
(late, retried, or queued behind the comment): a fork could push a bad commit, then a
clean one, and get the bad one approved by a comment on the clean one."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from tests.controlplane.test_comment_commands import (  # noqa: F401  # fixtures
    PR,
    WRITER,
    commanded,
    fork_pull_request,
    preview,
    say,
    service_id,
)
from tests.controlplane.test_feedback_checks import github_app  # noqa: F401  # a fixture
from tests.controlplane.test_feedback_github import REPOSITORY
from tests.githubserver.server import GitHubServer


def test_a_pr_approve_does_not_approve_a_head_github_no_longer_shows(
    client: FlaskClient,
    database: Database,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
    service_id: int,  # noqa: F811
    say: Callable[[str, str], tuple[str, str, list[int]]],  # noqa: F811
) -> None:
    bad = fork_pull_request(github_server)
    say(WRITER, "/portside preview")
    env = preview(database)
    assert env is not None and (env.status, env.head_sha) == ("awaiting_approval", bad)

    # The fork pushes a clean commit; its synchronize delivery has not reached Portside.
    state = github_server.state
    clean = state.commit(REPOSITORY, {"index.html": "clean\n"}, branch="fork-change")
    state.add_pull_request(
        REPOSITORY, PR, "fork-change", base_ref="main", head_full_name="someone/Hello-World"
    )
    assert clean != bad

    status, outcome, started = say(WRITER, "/portside approve")

    env = preview(database)
    assert env is not None and (env.approved_sha, started) == (None, [])
    assert (status, commanded(database)[-1]["result"]) == ("processed", "failed"), outcome
    assert clean[:7] in outcome
