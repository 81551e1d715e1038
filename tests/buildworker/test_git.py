"""Fetching one commit from the test GitHub server over smart HTTP, with a token."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from buildworker.errors import PermanentBuildError, TransientBuildError
from buildworker.git import AuthenticationFailed, fetch_commit

REPO = "Codertocat/Hello-World"
INSTALLATION = 4242


@pytest.fixture
def repo(github_server):
    """(clone URL, first SHA, second SHA, token) of a seeded repository."""
    state = github_server.state
    state.add_installation(INSTALLATION, "Codertocat")
    state.add_repository(INSTALLATION, REPO)
    first = state.commit(REPO, {"Dockerfile": "FROM base\n", "app/one.txt": "1\n"})
    second = state.commit(REPO, {"app/two.txt": "2\n", "app/one.txt": None})
    token = state.issue_token(INSTALLATION).token
    return github_server.repository_json(REPO)["clone_url"], first, second, token


def secret_forms(token: str) -> list[bytes]:
    basic = base64.b64encode(f"x-access-token:{token}".encode())
    return [token.encode(), basic]


def assert_token_nowhere(workspace: Path, token: str) -> None:
    config = (workspace / ".git" / "config").read_text()
    assert "extraheader" not in config.lower()
    for path in workspace.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for form in secret_forms(token):
                assert form not in content, f"token found in {path}"


def head(workspace: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(workspace), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_fetches_exactly_the_commit(repo, github_server, tmp_path):
    clone_url, first, _second, token = repo
    lines: list[str] = []
    workspace = fetch_commit(clone_url, first, token, tmp_path / "ws", log=lines.append)
    assert head(workspace) == first
    assert (workspace / "app" / "one.txt").read_text() == "1\n"
    assert not (workspace / "app" / "two.txt").exists()
    shallow = (workspace / ".git" / "shallow").read_text().split()
    assert shallow == [first]
    assert_token_nowhere(workspace, token)
    assert not any(token in line for line in lines)
    requests = github_server.state.git_requests
    assert requests and all(r.user == "x-access-token" and r.token == token for r in requests)


def test_refetch_into_the_same_workspace_is_clean(repo, tmp_path):
    clone_url, first, second, token = repo
    workspace = fetch_commit(clone_url, first, token, tmp_path / "ws")
    (workspace / "leftover.txt").write_text("from an interrupted attempt")
    fetch_commit(clone_url, second, token, workspace)
    assert head(workspace) == second
    assert (workspace / "app" / "two.txt").exists()
    assert not (workspace / "app" / "one.txt").exists()
    assert not (workspace / "leftover.txt").exists()
    assert_token_nowhere(workspace, token)


def test_a_refused_token_asks_for_a_fresh_one(repo, tmp_path):
    clone_url, first, _second, _token = repo
    bad = "ghs_" + "x" * 36
    with pytest.raises(AuthenticationFailed) as failure:
        fetch_commit(clone_url, first, bad, tmp_path / "ws")
    assert bad not in str(failure.value)
    assert "x-access-token" not in str(failure.value)
    assert_token_nowhere(tmp_path / "ws", bad)


@pytest.fixture
def plain_git_server(repo, github_server):
    """The same repositories behind `git http-backend` as a CGI server runs it: the body is
    passed on whatever the exit status, so upload-pack's own errors reach the client (the
    GitHub test server answers 500 instead, hiding "not our ref")."""
    root = github_server.state.git_root

    def app(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": environ["PATH_INFO"],
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "REQUEST_METHOD": environ["REQUEST_METHOD"],
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""),
        }
        out = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
        ).stdout
        head, _, content = out.partition(b"\r\n\r\n")
        status, headers = "200 OK", []
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = value.strip()
            elif key:
                headers.append((key, value.strip()))
        start_response(status, headers)
        return [content]

    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/{REPO}.git"
    server.shutdown()
    thread.join()
    server.server_close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def test_missing_commit_is_permanent(plain_git_server, tmp_path):
    with pytest.raises(PermanentBuildError, match="not found") as failure:
        fetch_commit(plain_git_server, "0" * 40, None, tmp_path / "ws")
    assert not isinstance(failure.value, TransientBuildError)


def test_public_repository_needs_no_token(repo, plain_git_server, tmp_path):
    _clone_url, first, _second, _token = repo
    assert head(fetch_commit(plain_git_server, first, None, tmp_path / "ws")) == first


def test_unreachable_server_is_transient(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransientBuildError) as failure:
        fetch_commit(f"http://127.0.0.1:{port}/o/r.git", "a" * 40, "tok", tmp_path / "ws")
    assert not isinstance(failure.value, AuthenticationFailed)


@pytest.mark.parametrize(
    ("clone_url", "sha", "message"),
    [
        ("file:///srv/repo.git", "a" * 40, "http"),
        ("ssh://git@github.com/o/r.git", "a" * 40, "http"),
        ("--upload-pack=touch /tmp/x", "a" * 40, "http"),
        ("https://x-access-token:secret@github.com/o/r.git", "a" * 40, "credentials"),
        ("https://github.com/o/r.git", "main", "SHA"),
        ("https://github.com/o/r.git", "a" * 39, "SHA"),
        ("https://github.com/o/r.git", "--output=/tmp/x" + "a" * 25, "SHA"),
    ],
)
def test_bad_input_is_refused_before_git_runs(tmp_path, clone_url, sha, message):
    with pytest.raises(PermanentBuildError, match=message) as failure:
        fetch_commit(clone_url, sha, "tok", tmp_path / "ws")
    assert "secret" not in str(failure.value)
    assert not (tmp_path / "ws").exists()
