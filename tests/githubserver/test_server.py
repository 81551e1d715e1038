"""The test GitHub server against real clients: PyGithub, requests, PyJWT and git."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from github import Auth, BadCredentialsException, Github, GithubException, GithubIntegration
from github.PaginatedList import PaginatedList
from github.Repository import Repository

from tests.fixtures.github import GitHubAppKey
from tests.githubserver.server import GitHubServer, generate_private_key_pem

INSTALLATION_ID = 1001
REPO = "octo-org/hello"
COMPOSE = "services:\n  web:\n    build: ./app\n"


@pytest.fixture
def server(github_server: GitHubServer) -> GitHubServer:
    state = github_server.state
    state.add_installation(INSTALLATION_ID, "octo-org", "Organization")
    state.add_repository(INSTALLATION_ID, REPO)
    state.commit(REPO, {"docker-compose.yml": COMPOSE, "app/Dockerfile": "FROM scratch\n"})
    state.add_installation(2002, "someone-else")
    state.add_repository(2002, "someone-else/private")
    return github_server


def app_jwt(
    key: GitHubAppKey,
    *,
    iss: Any = None,
    iat: int = -60,
    lifetime: int = 540,
    pem: str | None = None,
) -> str:
    now = int(time.time())
    claims = {
        "iat": now + iat,
        "exp": now + iat + lifetime,
        "iss": key.app_id if iss is None else iss,
    }
    # PyJWT's encode() insists on a string `iss`; GitHub also takes the integer.
    return jwt.PyJWS().encode(json.dumps(claims).encode(), pem or key.private_key_pem, "RS256")


def token_for(server: GitHubServer, installation_id: int = INSTALLATION_ID) -> str:
    return server.state.issue_token(installation_id).token


# PyGithub waits 0.25 s between requests and 1 s between writes, and retries 5xx and rate
# limits itself, unless told otherwise.
UNTHROTTLED: dict[str, Any] = {
    "seconds_between_requests": None,
    "seconds_between_writes": None,
    "retry": None,
}


def client(server: GitHubServer, auth: Auth.Auth) -> Github:
    return Github(auth=auth, base_url=server.url, **UNTHROTTLED)


def integration(server: GitHubServer, key: GitHubAppKey) -> GithubIntegration:
    auth = Auth.AppAuth(key.app_id, key.private_key_pem)
    return GithubIntegration(auth=auth, base_url=server.url, **UNTHROTTLED)


@pytest.mark.parametrize("iss", ["424242", 424242])
def test_app_jwt_accepted(server: GitHubServer, github_app_key: GitHubAppKey, iss: Any) -> None:
    response = requests.get(
        f"{server.url}/app",
        timeout=10,
        headers={"Authorization": f"Bearer {app_jwt(github_app_key, iss=iss)}"},
    )
    assert response.status_code == 200
    assert response.json()["id"] == github_app_key.app_id


@pytest.mark.parametrize(
    "claims",
    [
        {"pem": generate_private_key_pem()},  # signed by another key
        {"iat": -700},  # expired 160 s ago
        {"lifetime": 660},  # more than 10 minutes
        {"iss": "999"},
        {"iat": 300},  # issued in the future
    ],
)
def test_app_jwt_rejected(
    server: GitHubServer, github_app_key: GitHubAppKey, claims: dict[str, Any]
) -> None:
    response = requests.get(
        f"{server.url}/app",
        timeout=10,
        headers={"Authorization": f"Bearer {app_jwt(github_app_key, **claims)}"},
    )
    assert response.status_code == 401
    assert set(response.json()) >= {"message", "documentation_url"}


def test_app_endpoints_need_a_jwt(server: GitHubServer) -> None:
    token = token_for(server)
    for headers in ({}, {"Authorization": f"token {token}"}):
        response = requests.post(
            f"{server.url}/app/installations/{INSTALLATION_ID}/access_tokens",
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 401


def test_pygithub_as_app_and_installation(
    server: GitHubServer, github_app_key: GitHubAppKey
) -> None:
    app = integration(server, github_app_key)
    assert {i.id for i in app.get_installations()} == {INSTALLATION_ID, 2002}
    assert app.get_repo_installation("octo-org", "hello").id == INSTALLATION_ID
    access = app.get_access_token(INSTALLATION_ID)
    assert access.token.startswith("ghs_")
    assert access.expires_at > datetime.now(UTC) + timedelta(minutes=59)
    assert len(server.state.tokens) == 1

    repo = client(server, Auth.Token(access.token)).get_repo(REPO)
    assert repo.clone_url == f"{server.url}/{REPO}.git"
    assert repo.default_branch == "main"
    compose = repo.get_contents("docker-compose.yml")
    assert not isinstance(compose, list) and compose.decoded_content.decode() == COMPOSE
    listing = repo.get_contents("")
    assert isinstance(listing, list)
    assert {(c.path, c.type) for c in listing} == {("docker-compose.yml", "file"), ("app", "dir")}
    with pytest.raises(GithubException) as missing:
        repo.get_contents("nope.yml")
    assert missing.value.status == 404
    sha = repo.get_branch("main").commit.sha
    assert repo.get_git_ref("heads/main").object.sha == sha
    assert repo.get_commit("main").sha == sha
    listed = requests.get(
        f"{server.url}/installation/repositories",
        timeout=10,
        headers={"Authorization": f"token {access.token}"},
    ).json()
    assert [r["full_name"] for r in listed["repositories"]] == [REPO]

    # PyGithub's own installation auth fetches a token once and reuses it.
    app_auth = Auth.AppAuth(github_app_key.app_id, github_app_key.private_key_pem)
    app_gh = client(server, app_auth.get_installation_auth(INSTALLATION_ID))
    app_gh.get_repo(REPO)
    app_gh.get_repo(REPO)
    assert len(server.state.tokens) == 2
    # ...unless the token has less than 20 s left, then it fetches one for every request.
    server.state.token_lifetime = timedelta(seconds=10)
    short_lived = client(server, app_auth.get_installation_auth(INSTALLATION_ID))
    short_lived.get_repo(REPO)
    short_lived.get_repo(REPO)
    assert len(server.state.tokens) == 4


def test_token_for_some_repositories_and_permissions(
    server: GitHubServer, github_app_key: GitHubAppKey
) -> None:
    server.state.add_repository(INSTALLATION_ID, "octo-org/other")
    url = f"{server.url}/app/installations/{INSTALLATION_ID}/access_tokens"
    headers = {"Authorization": f"Bearer {app_jwt(github_app_key)}"}
    wanted = {"repositories": ["hello"], "permissions": {"contents": "read"}}
    created = requests.post(url, json=wanted, headers=headers, timeout=10)
    assert created.status_code == 201
    assert created.json()["permissions"] == {"contents": "read"}
    assert [r["full_name"] for r in created.json()["repositories"]] == [REPO]
    gh = client(server, Auth.Token(created.json()["token"]))
    assert gh.get_repo(REPO).id == server.state.repository(REPO).id
    with pytest.raises(GithubException) as other:
        gh.get_repo("octo-org/other")
    assert other.value.status == 404
    for refused in ({"permissions": {"contents": "write"}}, {"repositories": ["private"]}):
        assert requests.post(url, json=refused, headers=headers, timeout=10).status_code == 422


def test_contents_at_a_ref_and_branches(server: GitHubServer) -> None:
    state = server.state
    feature = state.commit(REPO, {"app/Dockerfile": None, "README": "hi\n"}, branch="feature")
    repo = client(server, Auth.Token(token_for(server))).get_repo(REPO)
    listing = repo.get_contents("", ref="feature")
    assert isinstance(listing, list)
    assert {c.path for c in listing} == {"docker-compose.yml", "README"}
    assert repo.get_branch("feature").commit.sha == feature
    state.delete_branch(REPO, "feature")
    with pytest.raises(GithubException) as gone:
        repo.get_branch("feature")
    assert gone.value.status == 404
    readme = repo.get_contents("README", ref=feature)
    assert not isinstance(readme, list) and readme.decoded_content == b"hi\n"


def test_bad_expired_revoked_and_foreign_tokens(server: GitHubServer) -> None:
    with pytest.raises(BadCredentialsException):
        client(server, Auth.Token("ghs_nonsense")).get_repo(REPO)
    expired = server.state.issue_token(INSTALLATION_ID)
    expired.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(BadCredentialsException):
        client(server, Auth.Token(expired.token)).get_repo(REPO)
    revoked = token_for(server)
    server.state.revoke_tokens()
    with pytest.raises(BadCredentialsException):
        client(server, Auth.Token(revoked)).get_repo(REPO)
    with pytest.raises(GithubException) as foreign:
        client(server, Auth.Token(token_for(server))).get_repo("someone-else/private")
    assert foreign.value.status == 404
    server.state.remove_repository(REPO)
    with pytest.raises(GithubException) as removed:
        client(server, Auth.Token(token_for(server))).get_repo(REPO)
    assert removed.value.status == 404


def test_suspended_installation_gets_no_token(
    server: GitHubServer, github_app_key: GitHubAppKey
) -> None:
    server.state.suspend_installation(INSTALLATION_ID)
    with pytest.raises(GithubException) as suspended:
        integration(server, github_app_key).get_access_token(INSTALLATION_ID)
    assert suspended.value.status == 403


def test_deployments_statuses_and_comments(server: GitHubServer) -> None:
    state = server.state
    sha = state.commit(REPO, {"README": "preview\n"}, branch="feature")
    state.add_pull_request(REPO, 7, "feature")
    repo = client(server, Auth.Token(token_for(server))).get_repo(REPO)

    deployment = repo.create_deployment(
        "feature",
        environment="hello-pr-7",
        transient_environment=True,
        production_environment=False,
        auto_merge=False,
        required_contexts=[],
        payload={"build": 1},
        description="Preview",
    )
    assert (deployment.sha, deployment.environment, deployment.payload) == (
        sha,
        "hello-pr-7",
        {"build": 1},
    )
    status = deployment.create_status(
        "success", target_url="http://ci/logs/1", environment_url="http://pr-7.example.test"
    )
    assert status.log_url == "http://ci/logs/1"
    assert [d.id for d in repo.get_deployments(environment="hello-pr-7")] == [deployment.id]
    assert [s.state for s in deployment.get_statuses()] == ["success"]
    assert state.deployments[0].required_contexts == []
    assert state.deployment_statuses[0].environment_url == "http://pr-7.example.test"

    commit = repo.get_commit(sha)
    commit.create_status(
        "pending", target_url="http://ci/builds/1", description="Building", context="portside/build"
    )
    assert [(s.state, s.context) for s in commit.get_statuses()] == [("pending", "portside/build")]
    assert state.statuses[0].sha == sha

    pull = repo.get_pull(7)
    assert (pull.head.sha, pull.head.ref, pull.base.ref, pull.head.repo.full_name) == (
        sha,
        "feature",
        "main",
        REPO,
    )
    comment = pull.create_issue_comment("Deploying preview")
    comment.edit("Preview ready at http://pr-7.example.test")
    assert state.comments[0].body == "Preview ready at http://pr-7.example.test"
    assert [c.body for c in repo.get_issue(7).get_comments()] == [state.comments[0].body]
    with pytest.raises(GithubException) as unknown_issue:
        repo.get_issue(8)
    assert unknown_issue.value.status == 404


def test_success_makes_earlier_deployments_inactive(server: GitHubServer) -> None:
    repo = client(server, Auth.Token(token_for(server))).get_repo(REPO)
    first, second = (
        repo.create_deployment("main", environment="staging", required_contexts=[])
        for _ in range(2)
    )
    first.create_status("success")
    second.create_status("success")
    assert [s.state for s in first.get_statuses()] == ["inactive", "success"]


def test_check_runs_move_to_a_conclusion_and_are_listed_per_commit(server: GitHubServer) -> None:
    state = server.state
    sha = state.commit(REPO, {"README": "checked\n"})
    repo = client(server, Auth.Token(token_for(server))).get_repo(REPO)

    run = repo.create_check_run(
        "Portside", sha, external_id="7", details_url="http://ci/builds/7", status="queued"
    )
    assert (run.status, run.conclusion, run.external_id, run.head_sha) == ("queued", None, "7", sha)
    output = {"title": "Building", "summary": "Step clone"}
    repo.get_check_run(run.id).edit(status="in_progress", output=output)
    repo.get_check_run(run.id).edit(
        conclusion="failure", output={"title": "build failed", "summary": "the log"}
    )
    (stored,) = state.check_runs
    assert (stored.status, stored.conclusion, stored.output["title"]) == (
        "completed",
        "failure",
        "build failed",
    )
    assert stored.completed_at is not None

    # A rerun of the same name and another app's check on the same commit.
    repo.create_check_run("Portside", sha, external_id="8", status="in_progress")
    repo.create_check_run("lint", sha, conclusion="success", output=output)
    commit = repo.get_commit(sha)
    latest = commit.get_check_runs(check_name="Portside")
    assert [r.external_id for r in latest] == ["8"]
    every = commit.get_check_runs(check_name="Portside", filter="all")
    assert [r.external_id for r in every] == ["8", "7"]
    assert {r.name for r in commit.get_check_runs()} == {"Portside", "lint"}
    assert len({r.check_suite_id for r in state.check_runs}) == 1

    token = token_for(server)
    paged = as_installation(
        server, f"/repos/{REPO}/commits/{sha}/check-runs", token, filter="all", per_page=2
    )
    assert paged.json()["total_count"] == 3 and len(paged.json()["check_runs"]) == 2
    assert "next" in paged.links
    api = f"{server.url}/repos/{REPO}/check-runs"
    headers = {"Authorization": f"token {token}"}
    refused = [
        {"name": "Portside", "head_sha": "f" * 40},  # no such commit
        {"name": "Portside", "head_sha": sha, "status": "completed"},  # no conclusion
        {"name": "Portside", "head_sha": sha, "conclusion": "green"},
        {"name": "Portside", "head_sha": sha, "output": {"title": "no summary"}},
    ]
    for data in refused:
        assert requests.post(api, json=data, headers=headers, timeout=10).status_code == 422
    assert len(state.check_runs) == 3

    reader = state.issue_token(INSTALLATION_ID, permissions={"checks": "read"}).token
    created = requests.post(
        api,
        json={"name": "Portside", "head_sha": sha},
        headers={"Authorization": f"token {reader}"},
        timeout=10,
    )
    assert created.status_code == 403

    payload = state.check_run_payload(state.check_runs[0], "rerequested", server.url)
    assert payload["check_run"]["external_id"] == "7"
    assert payload["check_run"]["check_suite"]["head_sha"] == sha
    assert payload["installation"]["id"] == INSTALLATION_ID
    assert payload["repository"]["full_name"] == REPO


def git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def basic_header(token: str) -> str:
    credentials = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return f"http.extraHeader=Authorization: Basic {credentials}"


def test_git_clone_and_fetch_by_sha(server: GitHubServer, tmp_path: Path) -> None:
    state = server.state
    token = token_for(server)
    feature = state.commit(REPO, {"README": "feature\n"}, branch="feature")
    state.commit(REPO, {"README": "later\n"}, branch="feature")
    clone_url = server.repository_json(REPO)["clone_url"]

    cloned = git("-c", basic_header(token), "clone", "--quiet", clone_url, str(tmp_path / "c"))
    assert cloned.returncode == 0, cloned.stderr
    assert (tmp_path / "c" / "docker-compose.yml").read_text() == COMPOSE

    git("init", "--quiet", str(tmp_path / "f"))
    fetched = git(
        "-c",
        f"http.extraHeader=Authorization: Bearer {token}",
        "fetch",
        "--quiet",
        "--depth",
        "1",
        clone_url,
        feature,
        cwd=tmp_path / "f",
    )
    assert fetched.returncode == 0, fetched.stderr
    assert git("cat-file", "-e", f"{feature}^{{commit}}", cwd=tmp_path / "f").returncode == 0
    assert all(r.token == token for r in state.git_requests)
    assert {r.user for r in state.git_requests} == {"x-access-token", None}


def test_git_needs_a_token_for_the_repository(server: GitHubServer, tmp_path: Path) -> None:
    clone_url = f"{server.url}/{REPO}.git"
    refused = git("clone", "--quiet", clone_url, str(tmp_path / "a"))
    assert refused.returncode != 0
    assert server.state.git_requests[0].status == 401
    foreign = git(
        "-c", basic_header(token_for(server, 2002)), "clone", clone_url, str(tmp_path / "b")
    )
    assert foreign.returncode != 0
    assert server.state.git_requests[-1].status == 404
    bad_user = base64.b64encode(f"someone:{token_for(server)}".encode()).decode()
    response = requests.get(
        f"{clone_url}/info/refs?service=git-upload-pack",
        timeout=10,
        headers={"Authorization": f"Basic {bad_user}"},
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="GitHub"'


def test_git_upload_pack_accepts_chunked_gzip_bodies(server: GitHubServer) -> None:
    def pkt(line: str) -> bytes:
        return f"{len(line) + 4:04x}{line}".encode()

    request_body = pkt("command=ls-refs\n") + b"0001" + pkt("ref-prefix refs/heads/\n") + b"0000"
    response = requests.post(
        f"{server.url}/{REPO}.git/git-upload-pack",
        data=iter([gzip.compress(request_body)]),  # chunked, as git sends large bodies
        headers={
            "Authorization": f"Bearer {token_for(server)}",
            "Content-Encoding": "gzip",
            "Content-Type": "application/x-git-upload-pack-request",
            "Git-Protocol": "version=2",
        },
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-git-upload-pack-result"
    assert b"refs/heads/main" in response.content


def test_a_token_writes_only_with_the_permission_it_was_minted_with(
    server: GitHubServer, github_app_key: GitHubAppKey, tmp_path: Path
) -> None:
    state = server.state
    state.installations[INSTALLATION_ID].permissions["contents"] = "write"
    state.add_repository(INSTALLATION_ID, "octo-org/other")
    sha = state.commit(REPO, {"README": "x\n"})
    minted = requests.post(
        f"{server.url}/app/installations/{INSTALLATION_ID}/access_tokens",
        json={"repositories": ["hello"], "permissions": {"contents": "read"}},
        headers={"Authorization": f"Bearer {app_jwt(github_app_key)}"},
        timeout=10,
    ).json()["token"]
    api = f"{server.url}/repos/{REPO}"
    put = {"message": "m", "content": base64.b64encode(b"planted\n").decode()}

    def call(method: str, url: str, token: str, body: Any = None) -> int:
        headers = {"Authorization": f"token {token}"}
        return requests.request(method, url, json=body, headers=headers, timeout=10).status_code

    assert call("GET", f"{api}/contents/README", minted) == 200
    assert call("PUT", f"{api}/contents/README", minted, put) == 403
    assert call("POST", f"{api}/statuses/{sha}", minted, {"state": "success"}) == 403
    assert call("POST", f"{api}/deployments", minted, {"ref": "main"}) == 403
    assert call("GET", f"{server.url}/repos/octo-org/other/contents/README", minted) == 404
    assert (
        git(
            "-c", basic_header(minted), "clone", f"{server.url}/{REPO}.git", str(tmp_path / "a")
        ).returncode
        == 0
    )
    other = git(
        "-c", basic_header(minted), "clone", f"{server.url}/octo-org/other.git", str(tmp_path / "b")
    )
    assert other.returncode != 0 and state.git_requests[-1].status == 404
    # A token with the installation's contents: write may.
    assert call("PUT", f"{api}/contents/README", token_for(server), put) == 201
    readme = requests.get(
        f"{api}/contents/README", headers={"Authorization": f"token {minted}"}, timeout=10
    ).json()
    assert base64.b64decode(readme["content"]) == b"planted\n"


def as_installation(
    server: GitHubServer, path: str, token: str, **params: Any
) -> requests.Response:
    return requests.get(
        f"{server.url}{path}",
        params=params,
        headers={"Authorization": f"token {token}"},
        timeout=10,
    )


def test_lists_are_paginated_with_link_headers(server: GitHubServer) -> None:
    state = server.state
    for number in range(149):  # with REPO: 150 repositories
        state.add_repository(INSTALLATION_ID, f"octo-org/repo-{number:03}")
    token = token_for(server)
    headers = {"Authorization": f"token {token}"}
    first = as_installation(server, "/installation/repositories", token, per_page=100)
    assert first.json()["total_count"] == 150
    assert len(first.json()["repositories"]) == 100
    assert set(first.links) == {"next", "last"}
    second = requests.get(first.links["next"]["url"], headers=headers, timeout=10)
    assert len(second.json()["repositories"]) == 50
    assert set(second.links) == {"prev", "first"}
    default = as_installation(server, "/installation/repositories", token)
    assert len(default.json()["repositories"]) == 30  # GitHub's default page
    assert default.links["last"]["url"].endswith("page=5")

    gh = client(server, Auth.Token(token_for(server)))
    gh.per_page = 100
    pages = PaginatedList(
        Repository, gh.requester, "/installation/repositories", None, list_item="repositories"
    )
    names = [repo.full_name for repo in pages]
    assert len(names) == len(set(names)) == 150

    repo = gh.get_repo(REPO)
    sha = state.commit(REPO, {"README": "x\n"})
    for _ in range(3):
        repo.get_commit(sha).create_status("pending", context="portside/build")
    paged = as_installation(server, f"/repos/{REPO}/commits/{sha}/statuses", token, per_page=2)
    assert len(paged.json()) == 2 and "next" in paged.links


def test_an_empty_repository_has_no_contents_nor_commits(server: GitHubServer) -> None:
    server.state.add_repository(INSTALLATION_ID, "octo-org/empty")
    repo = client(server, Auth.Token(token_for(server))).get_repo("octo-org/empty")
    assert repo.default_branch == "main"
    with pytest.raises(GithubException) as contents:
        repo.get_contents("")
    assert (contents.value.status, contents.value.data["message"]) == (
        404,
        "This repository is empty.",
    )
    with pytest.raises(GithubException) as commit:
        repo.get_commit("main")
    assert commit.value.status == 409


@pytest.mark.parametrize("after", [False, True])
def test_each_write_fails_once_before_or_after_acting(server: GitHubServer, after: bool) -> None:
    state = server.state
    sha = state.commit(REPO, {"README": "x\n"})
    fault = state.fail_each_write_once(after=after)
    repo = client(server, Auth.Token(token_for(server))).get_repo(REPO)
    commit = repo.get_commit(sha)  # reads are not touched
    with pytest.raises(GithubException) as first:
        commit.create_status("pending", context="portside/build")
    assert first.value.status == 502
    assert len(state.statuses) == (1 if after else 0)
    commit.create_status("pending", context="portside/build")  # the same write again
    with pytest.raises(GithubException):  # a new write fails once too
        commit.create_status("success", context="portside/build")
    acted = ["pending", "pending", "success"] if after else ["pending"]
    assert [s.state for s in state.statuses] == acted
    commit.create_status("success", context="portside/build")
    assert state.statuses[-1].state == "success"
    assert fault.failed == 2


def test_one_endpoint_fails_a_number_of_times(server: GitHubServer) -> None:
    state = server.state
    state.fail("/installation/repositories", method="GET", status=503, times=2)
    token = token_for(server)
    answers = [
        as_installation(server, "/installation/repositories", token).status_code for _ in range(3)
    ]
    assert answers == [503, 503, 200]


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_says_when_to_retry(server: GitHubServer, status: int) -> None:
    server.state.rate_limit(f"/repos/{REPO}", retry_after=7, status=status)
    token = token_for(server)
    limited = as_installation(server, f"/repos/{REPO}", token)
    assert limited.status_code == status
    assert limited.headers["Retry-After"] == "7"
    assert limited.json()["message"].startswith("You have exceeded a secondary rate limit")
    assert int(limited.headers["x-ratelimit-remaining"]) > 0
    assert as_installation(server, f"/repos/{REPO}", token).status_code == 200


def test_primary_rate_limit_names_the_reset(server: GitHubServer) -> None:
    server.state.rate_limit("*", primary=True, retry_after=30)
    token = token_for(server)
    limited = as_installation(server, f"/repos/{REPO}", token)
    assert limited.status_code == 403
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) > time.time()
    assert "Retry-After" not in limited.headers
    with pytest.raises(GithubException) as pygithub:  # PyGithub sees a rate limit too
        server.state.rate_limit("*", primary=True)
        client(server, Auth.Token(token_for(server))).get_repo(REPO)
    assert type(pygithub.value).__name__ == "RateLimitExceededException"


def test_expired_tokens_are_answered_401(server: GitHubServer) -> None:
    token = token_for(server)
    server.state.expire_tokens()
    answer = as_installation(server, f"/repos/{REPO}", token)
    assert (answer.status_code, answer.json()["message"]) == (401, "Bad credentials")
