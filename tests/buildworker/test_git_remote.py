"""Fetching one commit of a git-URL service's remote (issue 17): a local path, and a
server asking for a token (the test GitHub's git over HTTP on loopback stands in for any
https host), with the service's own credentials through GIT_ASKPASS or ``ssh -i``."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from buildworker.errors import PermanentBuildError, TransientBuildError
from buildworker.git import fetch_commit
from contracts.gitremote import GitAuth, auth_env
from tests.buildworker.test_git import assert_token_nowhere, head

REPO = "Codertocat/Hello-World"
INSTALLATION = 4244


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def local_repo(tmp_path: Path) -> tuple[Path, str, str]:
    """(bare repository, first SHA, second SHA): the first no branch's tip any more."""
    work = tmp_path / "work"
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    shas = []
    for text in ("one", "two"):
        (work / "page.txt").write_text(text)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", text)
        shas.append(git(work, "rev-parse", "HEAD"))
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare, shas[0], shas[1]


@pytest.mark.parametrize("form", ["path", "file://"])
def test_fetches_a_commit_of_a_local_repository(local_repo, tmp_path, form):
    bare, first, _second = local_repo
    url = str(bare) if form == "path" else f"file://{bare}"
    lines: list[str] = []
    workspace = fetch_commit(url, first, None, tmp_path / "ws", log=lines.append, remote=GitAuth())
    assert head(workspace) == first
    assert (workspace / "page.txt").read_text() == "one"
    assert lines[0] == f"Fetching {first} from {url}"


@pytest.fixture
def token_remote(github_server):
    """(clone URL, SHA, token) of a repository whose git server asks for a token."""
    state = github_server.state
    state.add_installation(INSTALLATION, "Codertocat")
    state.add_repository(INSTALLATION, REPO)
    sha = state.commit(REPO, {"Dockerfile": "FROM base\n"})
    token = state.issue_token(INSTALLATION).token
    return github_server.repository_json(REPO)["clone_url"], sha, token


@pytest.mark.parametrize("user", [None, "x-access-token"])
def test_a_token_goes_through_askpass_only(token_remote, github_server, tmp_path, user):
    url, sha, token = token_remote
    secret = f"{user}:{token}" if user else token
    lines: list[str] = []
    workspace = fetch_commit(
        url, sha, None, tmp_path / "ws", log=lines.append, remote=GitAuth(token=secret)
    )
    assert head(workspace) == sha
    assert_token_nowhere(workspace, token)
    assert not any(token in line for line in lines)
    used = [r for r in github_server.state.git_requests if r.status == 200]
    assert used and all((r.user, r.token) == ("x-access-token", token) for r in used)
    # The askpass script and its directory went with the fetch.
    assert not list(Path(tempfile.gettempdir()).glob("portside-git-*/askpass"))


def test_a_refused_token_is_not_in_the_error(token_remote, tmp_path):
    url, sha, _token = token_remote
    bad = "not-the-token-" + "z" * 24
    with pytest.raises(TransientBuildError) as failure:
        fetch_commit(url, sha, None, tmp_path / "ws", remote=GitAuth(token=bad))
    assert bad not in str(failure.value)
    assert "authentication failed" in str(failure.value).lower() or "refused" in str(failure.value)


def test_a_deploy_key_is_a_private_file_for_the_command_only():
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
    with auth_env(GitAuth(ssh_key=key), {"PATH": os.environ["PATH"], "GIT_TRACE": "1"}) as env:
        command = env["GIT_SSH_COMMAND"]
        path = Path(command.split(" -i ")[1].split()[0])
        assert path.read_text().strip() == key
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "BatchMode=yes" in command and "IdentitiesOnly=yes" in command
        assert "GIT_TRACE" not in env and env["GIT_TERMINAL_PROMPT"] == "0"
        assert key not in " ".join(env.values()).replace(str(path), "")
    assert not path.exists() and not path.parent.exists()


@pytest.mark.parametrize(
    "url",
    ["ext::sh -c touch% /tmp/pwned", "fd::3", "--upload-pack=touch /tmp/x", "git://h/r.git"],
)
def test_a_remote_the_control_plane_would_refuse_is_refused_here_too(tmp_path, url):
    with pytest.raises(PermanentBuildError, match="clone URL refused"):
        fetch_commit(url, "a" * 40, None, tmp_path / "ws", remote=GitAuth())
    assert not (tmp_path / "ws").exists()
