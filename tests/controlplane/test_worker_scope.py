"""A worker token reaches the credentials of the build step it holds (claimed in its lane:
trusted builds, forks' or all; never taken from the token holding it), and the clone token
it gets reads that one repository and writes nothing (the test GitHub server enforces both)."""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from controlplane.app import create_app
from controlplane.db import Database
from controlplane.models import Build, Installation, Repository
from controlplane.services import catalog, hosts, pushes, servicerules, tokens
from controlplane.settings import Secret, Settings
from tests.fixtures.github import GitHubAppKey
from tests.githubserver.server import GitHubServer

INSTALLATION = 77
REPO = "acme/app"
OTHER = "acme/other"


@pytest.fixture
def github_app(
    settings: Settings,
    database: Database,
    github_server: GitHubServer,
    github_app_key: GitHubAppKey,
) -> Iterator[Flask]:
    state = github_server.state
    state.add_installation(INSTALLATION, "acme", "Organization")
    for name in (REPO, OTHER):
        state.add_repository(INSTALLATION, name)
        state.commit(name, {"README": f"{name}\n"})
    configured = dataclasses.replace(
        settings,
        github_app_id=github_app_key.app_id,
        github_private_key=Secret(github_app_key.private_key_pem),
        github_api_url=github_server.url,
    )
    app = create_app(configured)
    app.config["TESTING"] = True
    yield app
    app.extensions["portside.wake_hub"].close()
    app.extensions["portside.db"].dispose()


@pytest.fixture
def build_id(database: Database, github_server: GitHubServer) -> int:
    with database.session_scope() as session:
        session.add(Installation(id=INSTALLATION, account_login="acme"))
        repo_id = github_server.state.repository(REPO).id
        session.add(Repository(id=repo_id, installation_id=INSTALLATION, full_name=REPO))
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(name="app", repository=REPO, branch="main", host="web-1"),
            "test",
        )
        build = pushes.start_build(
            session,
            service,
            pushes.production_environment(session, service),
            "a" * 40,
            branch="main",
        )
        assert build is not None
        session.flush()
        return build.id


def worker(database: Database, name: str, builds: str | None = None) -> dict[str, str]:
    with database.session_scope() as session:
        _row, secret = tokens.create_token(session, name, "worker", builds=builds)
    return {"Authorization": f"Bearer {secret}"}


def claiming(
    client: FlaskClient, headers: dict[str, str], build_id: int, step: str
) -> TestResponse:
    return client.post(
        f"/v1/builds/{build_id}/steps/{step}/claim",
        json={"attempt": 1, "worker": "build-1@test"},
        headers=headers,
    )


def claim(client: FlaskClient, headers: dict[str, str], build_id: int, step: str) -> int:
    return claiming(client, headers, build_id, step).status_code


def finish(client: FlaskClient, headers: dict[str, str], build_id: int, step: str) -> None:
    finished = client.post(
        f"/v1/builds/{build_id}/steps/{step}/finish",
        json={"attempt": 1, "status": "succeeded"},
        headers=headers,
    )
    assert finished.status_code == 204, finished.json


def credentials(client: FlaskClient, headers: dict[str, str], build_id: int) -> tuple[int, int]:
    """Status codes of the git token and of the registry credentials for ``build_id``."""
    token = client.post(f"/v1/builds/{build_id}/git-token", headers=headers)
    registry = client.get(f"/v1/builds/{build_id}/registry-credentials", headers=headers)
    return token.status_code, registry.status_code


def test_only_the_worker_holding_the_step_gets_the_build_credentials(
    github_app: Flask, database: Database, build_id: int
) -> None:
    client = github_app.test_client()
    holder, other = worker(database, "w-1"), worker(database, "w-2")
    assert credentials(client, holder, build_id) == (403, 403)  # queued: nobody holds it
    assert claim(client, holder, build_id, "clone") == 200
    assert credentials(client, holder, build_id) == (200, 200)
    assert credentials(client, other, build_id) == (403, 403)
    refused = client.post(f"/v1/builds/{build_id}/git-token", headers=other)
    assert (refused.json or {}).get("error") == "forbidden"
    finish(client, holder, build_id, "clone")
    assert credentials(client, holder, build_id) == (403, 403)  # between steps: held by none


def test_a_running_step_stays_with_its_token_whatever_worker_name_another_sends(
    github_app: Flask, database: Database, build_id: int
) -> None:
    client = github_app.test_client()
    holder, other = worker(database, "w-1"), worker(database, "w-2")
    assert claim(client, holder, build_id, "clone") == 200
    # The same worker name as the holder's (a name is the caller's own word): refused.
    refused = claiming(client, other, build_id, "clone")
    assert refused.status_code == 409
    assert "build-1@test" in (refused.json or {})["message"]
    assert credentials(client, other, build_id) == (403, 403)
    assert credentials(client, holder, build_id) == (200, 200)
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None and build.worker_token_id is not None
        holder_id = build.worker_token_id
    assert claim(client, holder, build_id, "clone") == 200  # its own retry, after a lost answer
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None and build.worker_token_id == holder_id


def admin_secret(database: Database) -> str:
    with database.session_scope() as session:
        return tokens.create_token(session, "admin", "admin")[1]


def build_variables(client: FlaskClient, database: Database, build_id: int) -> None:
    """A secret and a plain build argument for the build's service (set by an admin)."""
    admin = {"Authorization": f"Bearer {admin_secret(database)}"}
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        service_id = build.service_id
    for name, secret in (("NPM_TOKEN", True), ("PUBLIC_URL", False)):
        put = client.put(
            f"/v1/services/{service_id}/variables/{name}",
            json={"value": f"value-of-{name}", "kind": "build", "secret": secret},
            headers=admin,
        )
        assert put.status_code == 200, put.json


def test_a_worker_token_claims_only_the_builds_of_its_lane(
    github_app: Flask, database: Database, build_id: int
) -> None:
    client = github_app.test_client()
    build_variables(client, database, build_id)
    forks_only, trusted, everything = (
        worker(database, "forks", "untrusted"),
        worker(database, "default"),
        worker(database, "all", "all"),
    )
    refused = claiming(client, forks_only, build_id, "clone")
    assert refused.status_code == 403
    assert "claims untrusted builds only" in (refused.json or {})["message"]
    assert claim(client, everything, build_id, "clone") == 200
    finish(client, everything, build_id, "clone")
    # The step with the build arguments: nothing of them to the fork's worker.
    refused = claiming(client, forks_only, build_id, "build")
    assert refused.status_code == 403
    assert "build_args" not in (refused.json or {})
    assert "value-of-NPM_TOKEN" not in refused.get_data(as_text=True)
    assert credentials(client, forks_only, build_id) == (403, 403)
    claimed = claiming(client, trusted, build_id, "build")  # a token made without a lane
    assert claimed.status_code == 200, claimed.json
    assert (claimed.json or {})["build_args"]["NPM_TOKEN"] == "value-of-NPM_TOKEN"


def test_a_fork_build_is_claimed_by_an_untrusted_lane_token_only(
    github_app: Flask, database: Database, build_id: int
) -> None:
    client = github_app.test_client()
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        build.untrusted = True
    refused = claiming(client, worker(database, "default"), build_id, "clone")
    assert refused.status_code == 403
    assert "claims trusted builds only" in (refused.json or {})["message"]
    assert claim(client, worker(database, "forks", "untrusted"), build_id, "clone") == 200


def git(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_GLOBAL": os.devnull}
    return subprocess.run(["git", *args], env=env, capture_output=True, text=True, check=False)


def test_the_clone_token_reads_that_repository_only_and_writes_nothing(
    github_app: Flask,
    database: Database,
    build_id: int,
    github_server: GitHubServer,
    tmp_path: Path,
) -> None:
    client = github_app.test_client()
    holder = worker(database, "w-1")
    assert claim(client, holder, build_id, "clone") == 200
    token = (client.post(f"/v1/builds/{build_id}/git-token", headers=holder).json or {})["token"]
    minted = next(t for t in github_server.state.tokens if t.token == token)
    assert minted.repositories == frozenset({REPO})
    assert minted.permissions == {"contents": "read"}

    api, auth = github_server.url, {"Authorization": f"token {token}"}
    assert requests.get(f"{api}/repos/{REPO}/contents/README", headers=auth, timeout=10).ok
    other = requests.get(f"{api}/repos/{OTHER}/contents/README", headers=auth, timeout=10)
    assert other.status_code == 404
    write = requests.put(
        f"{api}/repos/{REPO}/contents/README",
        json={"message": "m", "content": base64.b64encode(b"x").decode()},
        headers=auth,
        timeout=10,
    )
    assert write.status_code == 403
    sha = github_server.state.commit(REPO, {"NEW": "1\n"})
    status = requests.post(
        f"{api}/repos/{REPO}/statuses/{sha}", json={"state": "success"}, headers=auth, timeout=10
    )
    assert status.status_code == 403

    header = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    extra = f"http.extraHeader=Authorization: Basic {header}"
    cloned = git("-c", extra, "clone", "--quiet", f"{api}/{REPO}.git", str(tmp_path / "a"))
    assert cloned.returncode == 0, cloned.stderr
    foreign = git("-c", extra, "clone", "--quiet", f"{api}/{OTHER}.git", str(tmp_path / "b"))
    assert foreign.returncode != 0
    assert github_server.state.git_requests[-1].status == 404


def test_another_worker_token_can_neither_finish_nor_keep_alive_a_step_it_does_not_hold(
    github_app: Flask, database: Database, build_id: int
) -> None:
    """A worker running forks' code (its token's lane: untrusted) must not fail, stop or
    pin a production build it never claimed: reporting a step's end and the heartbeat
    belong to the token holding the build, as its credentials do."""
    client = github_app.test_client()
    holder, stranger = worker(database, "w-1"), worker(database, "w-fork", builds="untrusted")
    assert claim(client, holder, build_id, "clone") == 200
    failed = client.post(
        f"/v1/builds/{build_id}/steps/clone/finish",
        json={"attempt": 1, "status": "failed", "error": "stopped by a stranger"},
        headers=stranger,
    )
    assert failed.status_code == 403, failed.json
    beat = client.post(f"/v1/builds/{build_id}/heartbeat", json={"attempt": 1}, headers=stranger)
    assert beat.status_code == 403, beat.json
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None and build.status == "running" and build.error is None
    own = client.post(f"/v1/builds/{build_id}/heartbeat", json={"attempt": 1}, headers=holder)
    assert own.status_code == 204, own.json
    finish(client, holder, build_id, "clone")
