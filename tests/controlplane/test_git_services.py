"""Services tracking a git URL (issue 17): created from a local path or a remote with a
token, polled with ``git ls-remote`` (one build per new head), deployed by hand, cloned
by the worker holding the step with the service's own credentials, never shown."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.errors import Malformed
from controlplane.github.app import GitHubApp
from controlplane.models import Build, Service
from controlplane.services import (
    catalog,
    envactions,
    feedback,
    gitsources,
    hosts,
    pushes,
    servicerules,
    tokens,
)
from controlplane.settings import Settings
from tasks import pipeline
from tests.buildworker.test_git_remote import git
from tests.controlplane.test_cli import (
    Run,
    assert_one_line_failure,
    migrated,  # noqa: F401 (a fixture)
    portside,  # noqa: F401 (a fixture)
    run_portside,
    sqlite_env,  # noqa: F401 (a fixture)
)
from tests.controlplane.test_intake_processing import github_app  # noqa: F401 (a fixture)
from tests.fixtures.stack import Stack, wait_for
from tests.githubserver.server import GitHubServer
from tests.support.live import LiveServer

GITHUB_REPO = "Codertocat/Hello-World"
INSTALLATION = 4343


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test settings with local paths allowed, as ``portside dev`` has them."""
    return dataclasses.replace(settings, allow_local_git=True)


class Remote:
    """A bare repository served by its path, and a work tree that pushes to it."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        self.branch = branch
        subprocess.run(["git", "init", "-q", "--bare", "-b", branch, str(self.bare)], check=True)
        subprocess.run(["git", "init", "-q", "-b", branch, str(self.work)], check=True)
        git(self.work, "remote", "add", "origin", str(self.bare))

    def commit(self, text: str, branch: str | None = None) -> str:
        (self.work / "index.html").write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", f"page: {text}")
        git(self.work, "push", "-q", "origin", f"HEAD:refs/heads/{branch or self.branch}")
        return git(self.work, "rev-parse", "HEAD")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


@pytest.fixture
def host(db_session: Session) -> str:
    hosts.create_host(db_session, "local", "test")
    db_session.commit()
    return "local"


def create(client: FlaskClient, headers: dict[str, str], **fields: Any) -> Any:
    return client.post(
        "/v1/services",
        json={"name": "hello", "host": "local", "port": 8080, **fields},
        headers=headers,
    )


def builds_of(session: Session, service_id: int) -> list[Build]:
    session.expire_all()
    return list(
        session.scalars(select(Build).where(Build.service_id == service_id).order_by(Build.id))
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ext::sh -c touch% /tmp/pwned", "remote helpers"),
        ("https://example.com/a repo.git", "control characters"),
        ("ext::sh", "remote helpers"),
        ("fd::3", "remote helpers"),
        ("--upload-pack=touch /tmp/pwned", "start with '-'"),
        ("-oProxyCommand=x:repo", "start with '-'"),
        ("ssh://-oProxyCommand=x/repo", "start with '-'"),
        ("git://example.com/repo.git", "scheme 'git'"),
        ("http://example.com/repo.git", "scheme 'http'"),
        ("ftp://example.com/repo.git", "scheme 'ftp'"),
        ("https://user:secret@example.com/repo.git", "no password"),
        ("relative/path", "absolute local path"),
        ("/srv/../etc/repo", "without '..'"),
    ],
)
def test_bad_git_urls_get_a_clear_400(
    client: FlaskClient, admin_headers: dict[str, str], host: str, url: str, reason: str
) -> None:
    response = create(client, admin_headers, git_url=url)
    assert response.status_code == 400, response.json
    assert reason in response.json["message"]
    assert "git_url" in response.json["details"]
    assert "secret" not in response.text


def test_local_paths_need_the_admin_setting(db_session: Session, host: str, remote: Remote) -> None:
    remote.commit("one")
    spec = servicerules.ServiceSpec(
        name="hello",
        repository=None,
        branch=None,
        host="",
        git=gitsources.GitSource(str(remote.bare)),
    )
    with pytest.raises(Malformed, match="PORTSIDE_ALLOW_LOCAL_GIT"):
        catalog.create_service(db_session, spec, "test", allow_local_git=False)


def test_repository_or_git_url_not_both_nor_neither(
    client: FlaskClient, admin_headers: dict[str, str], host: str, remote: Remote
) -> None:
    remote.commit("one")
    both = create(client, admin_headers, git_url=str(remote.bare), repository="o/r")
    assert both.status_code == 400 and "not both" in both.json["message"]
    neither = create(client, admin_headers)
    assert neither.status_code == 400 and "git_url" in neither.json["message"]
    wrong_kind = create(client, admin_headers, git_url=str(remote.bare), git_token="tok-12345")
    assert wrong_kind.status_code == 400 and "https" in wrong_kind.json["message"]
    too_often = create(client, admin_headers, git_url=str(remote.bare), poll_interval=5)
    assert too_often.status_code == 400 and "poll_interval" in too_often.json["details"]


def test_a_local_repository_is_tracked_on_its_head_branch(
    client: FlaskClient,
    admin_headers: dict[str, str],
    db_session: Session,
    host: str,
    remote: Remote,
    tmp_path: Path,
) -> None:
    head = remote.commit("one")
    response = create(client, admin_headers, git_url=f"file://{remote.bare}")
    assert response.status_code == 201, response.json
    body = response.json
    assert body["git_url"] == f"file://{remote.bare}"
    assert body["branch"] == "main"  # the remote's HEAD: no branch was named
    assert body["host"] == "local"
    assert body["repository"] == "git/hello" and body["repository_id"] is None
    assert body["git_credentials"] is None and body["poll_interval"] == 60
    service = db_session.get(Service, body["id"])
    assert service is not None and service.git_last_sha == head
    # The head at creation counts as seen: the first deploy is asked for.
    assert builds_of(db_session, service.id) == []

    missing = create(client, admin_headers, name="other", git_url=str(tmp_path / "nope.git"))
    assert missing.status_code == 422
    assert "does not appear to be a git repository" in missing.json["message"]
    no_branch = create(client, admin_headers, name="other", git_url=str(remote.bare), branch="dev")
    assert no_branch.status_code == 422 and "no branch 'dev'" in no_branch.json["message"]


def local_service(session: Session, remote: Remote, **fields: Any) -> Service:
    spec = servicerules.ServiceSpec(
        name=fields.pop("name", "hello"),
        repository=None,
        branch=fields.pop("branch", None),
        host="",  # the only host there is
        port=8080,
        git=gitsources.GitSource(str(remote.bare), **fields),
    )
    service = catalog.create_service(session, spec, "test", allow_local_git=True)
    session.commit()
    return service


def test_polling_queues_exactly_one_build_per_new_head(
    db_session: Session, database: Database, host: str, remote: Remote
) -> None:
    remote.commit("one")
    service = local_service(db_session, remote, poll_interval=30)
    created = dt.datetime.now(dt.UTC)
    # Not due before its interval has passed: nothing is read.
    assert gitsources.poll_due(db_session, None, created + dt.timedelta(seconds=5)) == []

    second = remote.commit("two")
    later = created + dt.timedelta(seconds=31)
    started = gitsources.poll_due(db_session, None, later)
    assert len(started) == 1
    build = db_session.get(Build, started[0])
    assert build is not None and (build.commit_sha, build.branch) == (second, "main")
    assert build.status == "queued" and build.steps[0].name == "clone"
    assert build.delivery_id is None

    # The same head again, or polled twice at once: no second build.
    assert gitsources.poll_service(db_session, None, service.id) is None
    with database.session_scope() as other:
        other.get(Service, service.id).git_last_sha = None  # type: ignore[union-attr]
    assert gitsources.poll_service(db_session, None, service.id) is None
    assert [b.commit_sha for b in builds_of(db_session, service.id)] == [second]

    # Another branch moving starts nothing; the tracked one moving does, once.
    remote.commit("elsewhere", branch="feature")
    assert gitsources.poll_service(db_session, None, service.id) is None
    third = remote.commit("three")
    assert gitsources.poll_service(db_session, None, service.id) is not None
    assert [b.commit_sha for b in builds_of(db_session, service.id)] == [second, third]


def test_an_unreachable_remote_is_logged_and_skipped(
    db_session: Session, host: str, remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    remote.commit("one")
    service = local_service(db_session, remote)
    remote.bare.rename(remote.bare.with_suffix(".moved"))
    with caplog.at_level(logging.WARNING, logger="controlplane.services.gitsources"):
        assert gitsources.poll_service(db_session, None, service.id) is None
    assert "does not appear to be a git repository" in caplog.text
    db_session.expire_all()
    assert db_session.get(Service, service.id).git_polled_at is not None  # type: ignore[union-attr]


def test_deploy_resolves_refs_with_ls_remote(
    client: FlaskClient,
    admin_headers: dict[str, str],
    db_session: Session,
    host: str,
    remote: Remote,
) -> None:
    first = remote.commit("one")
    git(remote.work, "tag", "v1")
    git(remote.work, "push", "-q", "origin", "v1")
    second = remote.commit("two")
    service = local_service(db_session, remote)

    head = client.post(f"/v1/services/{service.id}/deploy", json={}, headers=admin_headers)
    assert head.status_code == 202, head.json
    assert head.json["commit_sha"] == second
    tag = client.post(
        f"/v1/services/{service.id}/deploy", json={"ref": "v1"}, headers=admin_headers
    )
    assert tag.status_code == 202 and tag.json["commit_sha"] == first
    short = client.post(
        f"/v1/services/{service.id}/deploy", json={"ref": second[:10]}, headers=admin_headers
    )
    assert short.status_code == 202 and short.json["commit_sha"] == second
    unknown = client.post(
        f"/v1/services/{service.id}/deploy", json={"ref": "nope"}, headers=admin_headers
    )
    assert (
        unknown.status_code == 422 and "is not a branch, tag or commit" in unknown.json["message"]
    )


@pytest.fixture
def github_remote(github_server: GitHubServer) -> tuple[str, str, str]:
    """(clone URL on loopback http, head SHA, token) of a repository that needs a token:
    the test GitHub's git server stands in for any https host asking for one."""
    state = github_server.state
    state.add_installation(INSTALLATION, "Codertocat")
    state.add_repository(INSTALLATION, GITHUB_REPO, default_branch="master")
    sha = state.commit(GITHUB_REPO, {"index.html": "hello\n"}, branch="master")
    token = state.issue_token(INSTALLATION).token
    return github_server.repository_json(GITHUB_REPO)["clone_url"], sha, token


def test_token_is_stored_encrypted_and_never_shown(
    client: FlaskClient,
    admin_headers: dict[str, str],
    db_session: Session,
    settings: Settings,
    host: str,
    github_remote: tuple[str, str, str],
    github_server: GitHubServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, sha, token = github_remote
    refused = create(client, admin_headers, git_url=url, git_token="ghs_" + "n" * 36)
    assert refused.status_code == 422
    assert "n" * 36 not in refused.text

    with caplog.at_level(logging.DEBUG):
        response = create(client, admin_headers, git_url=url, git_token=token)
        assert response.status_code == 201, response.json
        listed = client.get("/v1/services", headers=admin_headers)
    assert response.json["git_credentials"] == "token" and response.json["branch"] == "master"
    for text in (response.text, listed.text, caplog.text):
        assert token not in text
    service = db_session.get(Service, response.json["id"])
    assert service is not None and service.git_last_sha == sha
    assert service.git_token_encrypted is not None
    assert token.encode() not in service.git_token_encrypted
    assert SecretBox.from_settings(settings).decrypt(service.git_token_encrypted) == token
    # The token went to the git server in git's own Basic auth, and nowhere else.
    assert any(r.token == token and r.status == 200 for r in github_server.state.git_requests)


def claim(client: FlaskClient, headers: dict[str, str], build_id: int) -> Any:
    return client.post(
        f"/v1/builds/{build_id}/steps/clone/claim",
        json={"attempt": 1, "worker": "w1"},
        headers=headers,
    )


def test_the_step_holder_alone_gets_the_url_and_credentials(
    client: FlaskClient,
    admin_headers: dict[str, str],
    worker_headers: dict[str, str],
    database: Database,
    host: str,
    github_remote: tuple[str, str, str],
) -> None:
    url, sha, token = github_remote
    service = create(client, admin_headers, git_url=url, git_token=token).json
    build = client.post(f"/v1/services/{service['id']}/deploy", json={}, headers=admin_headers)
    assert build.status_code == 202, build.json
    build_id = build.json["id"]
    with database.session_scope() as session:
        _row, other = tokens.create_token(session, "other-worker", "worker", builds="all")
    other_headers = {"Authorization": f"Bearer {other}"}
    assert (
        client.post(f"/v1/builds/{build_id}/git-token", headers=worker_headers).status_code == 403
    )

    spec = claim(client, worker_headers, build_id)
    assert spec.status_code == 200, spec.json
    assert (spec.json["clone_url"], spec.json["git_remote"]) == (url, True)
    assert spec.json["commit_sha"] == sha and token not in spec.text
    credentials = client.post(f"/v1/builds/{build_id}/git-token", headers=worker_headers)
    assert credentials.status_code == 200
    assert credentials.json["token"] == token and credentials.json["ssh_key"] is None
    refused = client.post(f"/v1/builds/{build_id}/git-token", headers=other_headers)
    assert refused.status_code == 403 and token not in refused.text


def test_no_github_feedback_for_a_git_url_service(
    db_session: Session,
    settings: Settings,
    host: str,
    remote: Remote,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
) -> None:
    remote.commit("one")
    service = local_service(db_session, remote)
    build = envactions.deploy_ref(db_session, github_app, service.id, None, "test")
    db_session.commit()
    for event in (feedback.build_queued, feedback.build_running, feedback.build_failed):
        event(db_session, github_app, settings, build.id)
    state = github_server.state
    assert state.statuses == [] and state.check_runs == []


def test_github_pushes_never_reach_a_git_url_service(
    db_session: Session, host: str, remote: Remote
) -> None:
    remote.commit("one")
    service = local_service(db_session, remote)
    assert pushes.tracking_services(db_session, 1, service.repository_full_name) == []


@pytest.mark.docker
@pytest.mark.slow
def test_a_git_url_service_is_built_from_its_remote_and_polled(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    """End to end through the control worker and a build worker: ``deploy`` builds the
    head, a push is found by polling and built once, the token never in a build log."""
    state = stack.github.state
    state.add_installation(INSTALLATION, "Codertocat")
    state.add_repository(INSTALLATION, GITHUB_REPO, default_branch="master")
    dockerfile = (
        f"FROM {base_image}\nCOPY index.html /www/index.html\n"
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
    )
    first = state.commit(
        GITHUB_REPO, {"Dockerfile": dockerfile, "index.html": "one\n"}, branch="master"
    )
    token = state.issue_token(INSTALLATION).token
    url = stack.github.repository_json(GITHUB_REPO)["clone_url"]
    stack.create_host("local")
    created = requests.post(
        f"{stack.url}/v1/services",
        json={"name": "hello", "host": "local", "port": 8080, "git_url": url, "git_token": token},
        headers=stack.admin_headers,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    service_id = created.json()["id"]
    deployed = requests.post(
        f"{stack.url}/v1/services/{service_id}/deploy",
        json={},
        headers=stack.admin_headers,
        timeout=30,
    )
    assert deployed.status_code == 202, deployed.text
    stack.start_buildworker("build-git")

    def finished(sha: str) -> Build | None:
        with stack.database.session_scope() as session:
            build = session.scalar(select(Build).where(Build.commit_sha == sha))
            return build if build and build.status in ("succeeded", "failed", "cancelled") else None

    built = wait_for(lambda: finished(first), 300, 0.5, "the deployed build")
    assert built.status == "succeeded", built.error
    assert built.images["app"]["repository"].endswith("/git/hello")
    logs = requests.get(
        f"{stack.url}/v1/builds/{built.id}/logs", headers=stack.admin_headers, timeout=10
    ).json()["lines"]
    assert any(f"Fetching {first} from {url}" in line for line in logs)
    assert not any(token in line for line in logs)

    second = state.commit(GITHUB_REPO, {"index.html": "two\n"}, branch="master")
    with stack.database.session_scope() as session:
        session.get(Service, service_id).git_polled_at = None  # type: ignore[union-attr]
    stack.send(pipeline.POLL_GIT_SERVICES)
    stack.send(pipeline.POLL_GIT_SERVICES)
    assert wait_for(lambda: finished(second), 300, 0.5, "the polled build").status == "succeeded"
    with stack.database.session_scope() as session:
        shas = [b.commit_sha for b in session.scalars(select(Build).order_by(Build.id))]
    assert shas == [first, second]
    for build in (built, finished(second)):
        image = build.images["app"]  # type: ignore[union-attr]
        registry.delete_image(image["repository"].split("/", 1)[1], image["tag"])


def test_the_only_host_is_taken_when_none_is_named(
    client: FlaskClient,
    admin_headers: dict[str, str],
    db_session: Session,
    host: str,
    remote: Remote,
) -> None:
    remote.commit("one")
    body = {"name": "hello", "git_url": str(remote.bare), "port": 8080}
    created = client.post("/v1/services", json=body, headers=admin_headers)
    assert created.status_code == 201, created.json
    assert created.json["host"] == "local"
    hosts.create_host(db_session, "other", "test")
    db_session.commit()
    two = client.post("/v1/services", json={**body, "name": "again"}, headers=admin_headers)
    assert two.status_code == 422 and "give host or hosts (2 hosts exist)" in str(two.json)


@pytest.fixture
def live(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    yield server
    server.stop()


def test_portside_services_create_with_git_then_deploy(
    live: LiveServer,
    admin_headers: dict[str, str],
    host: str,
    github_remote: tuple[str, str, str],
    tmp_path: Path,
) -> None:
    """The CLI over the API: no host named (the only one), the token read from a file and
    never printed, then ``portside deploy``."""
    url, sha, token = github_remote
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    env = {
        "PORTSIDE_URL": live.url,
        "PORTSIDE_DATA_DIR": str(tmp_path / "data"),
        "PORTSIDE_TOKEN": admin_headers["Authorization"].split(" ", 1)[1],
    }
    args = ["services", "create", "hello", "--git", url, "--git-token-file", str(token_file)]
    created = run_portside([*args, "--port", "8080", "--json"], env)
    assert created.code == 0, created
    service = json.loads(created.stdout)
    assert (service["host"], service["git_credentials"], service["branch"]) == (
        "local",
        "token",
        "master",
    )
    assert token not in created.stdout + created.stderr
    deployed = run_portside(["deploy", "hello"], env)
    assert deployed.code == 0, deployed
    assert f"of {sha[:10]} queued" in deployed.stdout
    listed = run_portside(["services", "list"], env).stdout_lines
    assert url in listed[1] and "git/hello" not in listed[1]
    both = run_portside(["services", "create", "x", "--git", url, "--repository", "o/r"], env)
    assert both.code == 2 and "not allowed with argument" in both.stderr


def test_portside_services_create_with_git_on_the_database(
    migrated: Run,  # noqa: F811
    remote: Remote,
) -> None:
    """Without PORTSIDE_URL the command writes the database through the same spec, and
    local paths follow PORTSIDE_ALLOW_LOCAL_GIT there too."""
    remote.commit("one")
    assert migrated("hosts", "create", "local").code == 0
    refused = migrated("services", "create", "hello", "--git", str(remote.bare), "--port", "8080")
    assert_one_line_failure(refused, 2, "PORTSIDE_ALLOW_LOCAL_GIT")
    allowed = migrated(
        "services",
        "create",
        "hello",
        "--git",
        str(remote.bare),
        "--port",
        "8080",
        env={"PORTSIDE_ALLOW_LOCAL_GIT": "1"},
    )
    assert allowed.code == 0, allowed
    assert allowed.stdout.startswith("created service hello")
    listed = migrated("services", "list").stdout_lines
    assert str(remote.bare) in listed[1] and "git/hello" not in listed[1]


def test_a_service_whose_credentials_cannot_be_opened_does_not_stop_the_others(
    db_session: Session,
    settings: Settings,
    host: str,
    remote: Remote,
    github_remote: tuple[str, str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, _sha, token = github_remote
    spec = servicerules.ServiceSpec(
        name="private", repository=None, branch=None, host="", git=gitsources.GitSource(url, token)
    )
    catalog.create_service(db_session, spec, "test", box=SecretBox.from_settings(settings))
    remote.commit("one")
    public = local_service(db_session, remote)
    head = remote.commit("two")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    with caplog.at_level(logging.WARNING, logger="controlplane.services.gitsources"):
        started = gitsources.poll_due(db_session, None, later)  # no secret key here
    assert [b.commit_sha for b in builds_of(db_session, public.id)] == [head]
    assert len(started) == 1
    assert "PORTSIDE_SECRET_KEY is needed" in caplog.text and token not in caplog.text
