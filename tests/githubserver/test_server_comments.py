"""The test GitHub server's collaborator permission, comment reactions and check run
actions, against PyGithub and requests as a GitHub App installation uses them."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from github import Auth, GithubException

from tests.githubserver.server import GitHubServer
from tests.githubserver.test_server import INSTALLATION_ID, REPO, client, server, token_for

__all__ = ["server"]  # a fixture


def api(server: GitHubServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"token {token_for(server)}"}
    return requests.request(method, f"{server.url}{path}", headers=headers, timeout=10, **kwargs)


def test_the_permission_of_each_role_and_of_a_stranger(server: GitHubServer) -> None:
    state = server.state
    for login, role in (("ann", "admin"), ("max", "maintain"), ("wes", "write"), ("tia", "triage")):
        state.add_collaborator(REPO, login, role)
    github = client(server, Auth.Token(token_for(server)))
    repo = github.get_repo(REPO)
    assert [repo.get_collaborator_permission(u) for u in ("ann", "max", "wes", "tia")] == [
        "admin",
        "write",
        "write",
        "read",
    ]
    # A stranger may do nothing with a private repository; the answer is still 200.
    body = api(server, "GET", f"/repos/{REPO}/collaborators/stranger/permission").json()
    assert (body["permission"], body["role_name"], body["user"]["login"]) == (
        "none",
        "none",
        "stranger",
    )
    maintainer = api(server, "GET", f"/repos/{REPO}/collaborators/max/permission").json()
    assert maintainer["role_name"] == "maintain"
    assert maintainer["user"]["permissions"] == {
        "pull": True,
        "triage": True,
        "push": True,
        "maintain": True,
        "admin": False,
    }
    # Another installation's repository is not there for this token.
    assert (
        api(server, "GET", "/repos/someone-else/private/collaborators/x/permission").status_code
        == 404
    )


def test_the_permission_endpoint_fails_when_told_to(server: GitHubServer) -> None:
    fault = server.state.fail("/repos/*/collaborators/*/permission", method="GET")
    path = f"/repos/{REPO}/collaborators/ann/permission"
    assert api(server, "GET", path).status_code == 502
    assert api(server, "GET", path).status_code == 200 and fault.failed == 1


def test_reactions_are_created_once_and_checked(server: GitHubServer) -> None:
    state = server.state
    comment = state.add_issue_comment(REPO, 3, "/portside approve", "ann")
    path = f"/repos/{REPO}/issues/comments/{comment.id}/reactions"
    first = api(server, "POST", path, json={"content": "+1"})
    again = api(server, "POST", path, json={"content": "+1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and first.json()["content"] == "+1"
    assert first.json()["user"]["type"] == "Bot"
    assert api(server, "POST", path, json={"content": "thumbsup"}).status_code == 422
    missing = f"/repos/{REPO}/issues/comments/999999/reactions"
    assert api(server, "POST", missing, json={"content": "+1"}).status_code == 404

    sha = state.commit(REPO, {"a.txt": "a\n"})
    on_commit = state.add_commit_comment(REPO, sha, "/portside redeploy", "ann")
    commit_path = f"/repos/{REPO}/comments/{on_commit.id}/reactions"
    # Reacting to a commit comment needs contents: write, which the default App lacks.
    assert api(server, "POST", commit_path, json={"content": "+1"}).status_code == 403
    state.installations[INSTALLATION_ID].permissions["contents"] = "write"
    assert api(server, "POST", commit_path, json={"content": "confused"}).status_code == 201
    assert [(r.subject, r.content) for r in state.reactions] == [
        ("issue_comment", "+1"),
        ("commit_comment", "confused"),
    ]


def test_check_run_actions_are_kept_and_validated(server: GitHubServer) -> None:
    sha = server.state.commit(REPO, {"b.txt": "b\n"})
    repo = client(server, Auth.Token(token_for(server))).get_repo(REPO)
    action = {"label": "Redeploy", "description": "Build it again", "identifier": "redeploy"}
    run = repo.create_check_run("Portside", sha, status="completed", conclusion="success")
    run.edit(actions=[action])
    (stored,) = server.state.check_runs
    assert stored.actions == [action]
    for bad in (
        [action | {"identifier": "x" * 21}],
        [action | {"label": "y" * 21}],
        [action | {"description": "z" * 41}],
        [{"label": "Redeploy", "description": "no identifier"}],
        [action] * 4,
    ):
        with pytest.raises(GithubException) as refused:
            run.edit(actions=bad)
        assert refused.value.status == 422
    assert server.state.check_runs[0].actions == [action]
