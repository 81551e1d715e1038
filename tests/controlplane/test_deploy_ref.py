"""Deploy any ref (issue 19): ``POST /v1/services/{id}/deploy`` and ``portside deploy``
resolve a branch, tag or SHA through the test GitHub and deploy that commit, an older one
included; a service tracking tags (``track_tags``) deploys the newest matching tag pushed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import AuditEvent, Build, Environment
from controlplane.services import backstop, catalog, deployments
from tests.controlplane.test_build_ordering import REPOSITORY, builds_by_commit, commit, start
from tests.controlplane.test_cli import assert_one_line_failure, run_portside
from tests.controlplane.test_intake_processing import (
    delivery,
    github_app,  # noqa: F401 (a fixture)
    post,
    process,
    push_payload,
    seeded,  # noqa: F401 (a fixture)
    service,  # noqa: F401 (a fixture)
)
from tests.githubserver import repos
from tests.githubserver.server import GitHubServer
from tests.support.live import LiveServer

DIGEST = "sha256:" + "d" * 64


@pytest.fixture
def deploying(
    app: Flask,
    client: FlaskClient,
    github_app: GitHubApp,  # noqa: F811
    service: str,  # noqa: F811
) -> FlaskClient:
    """The API with the App pointed at the test GitHub, and service ``hello`` on master."""
    app.extensions["portside.github"] = github_app
    return client


def tag(server: GitHubServer, name: str, sha: str, *, annotated: bool = False) -> str:
    """Tag ``sha`` in the test GitHub's repository; return what a push of it names as
    ``after`` (an annotated tag's own object)."""
    path = server.state.repository(REPOSITORY).path
    if annotated:
        repos.git(path, "tag", "-a", "-m", f"release {name}", name, sha)
    else:
        repos.git(path, "tag", name, sha)
    return repos.git(path, "rev-parse", f"refs/tags/{name}").decode().strip()


def tag_push(payload: dict[str, Any], name: str, after: str = "") -> dict[str, Any]:
    """A recorded branch push (of its head commit) made GitHub's push of a new tag there:
    ``created``, no ``before``, no commits; ``after`` names an annotated tag's object."""
    return {
        **payload,
        "ref": f"refs/tags/{name}",
        "before": "0" * 40,
        "after": after or payload["after"],
        "created": True,
        "base_ref": "refs/heads/master",
        "commits": [],
    }


def tagged(server: GitHubServer, name: str, sha: str, pushed_at: int, after: str = "") -> Any:
    """The push of a new tag ``name`` on ``sha`` in the test GitHub's repository."""
    return tag_push(push_payload(server, sha, pushed_at=pushed_at), name, after)


def service_id(db_session: Session) -> int:
    return catalog.list_services(db_session)[0].id


def deployed(database: Database, sha: str) -> str:
    """Record the deployment of the newest build of ``sha`` as its worker would (images
    pushed); return the deployment's status (pending: the desired state, superseded: not)."""
    with database.session_scope() as session:
        build = session.scalars(
            select(Build).where(Build.commit_sha == sha).order_by(Build.id.desc())
        ).first()
        assert build is not None
        build.images = {"app": {"repository": "r/o/hello", "tag": sha[:12], "digest": DIGEST}}
        session.flush()
        return deployments.record_deployment(session, build.service_id, build.id, "test").status


def running(db_session: Session) -> str | None:
    db_session.expire_all()
    production = db_session.scalar(select(Environment).where(Environment.kind == "production"))
    assert production is not None and production.current_deployment is not None
    return production.current_deployment.build.commit_sha


def test_deploying_an_older_tag_deploys_it_and_a_later_push_replaces_it(
    deploying: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    admin_headers: dict[str, str],
) -> None:
    old = commit(seeded, "1")
    tag(seeded, "v1.2.0", old)
    new = commit(seeded, "2")
    process(database, post(deploying, "push", push_payload(seeded, new)), github_app)
    start(database, new, github_app)
    assert deployed(database, new) == "pending"

    answer = deploying.post(
        f"/v1/services/{service_id(db_session)}/deploy",
        json={"ref": "v1.2.0"},
        headers=admin_headers,
    )

    assert answer.status_code == 202, answer.json
    assert answer.json["commit_sha"] == old
    assert (answer.json["ref"], answer.json["branch"], answer.json["status"]) == (
        "v1.2.0",
        "v1.2.0",
        "queued",
    )
    # Its commit is an ancestor of the one running, yet it is neither cancelled nor
    # superseded: a person chose it.
    assert start(database, old, github_app) == []
    assert deployed(database, old) == "pending"
    assert running(db_session) == old
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "service.deploy"))
    assert event is not None and event.detail["commit"] == old

    # A push after it is deployed as usual (pushed later than the deploy was asked for).
    newest = commit(seeded, "3")
    later = push_payload(seeded, newest, pushed_at=int(time.time()) + 5)
    later["before"] = new
    process(database, post(deploying, "push", later), github_app)
    assert start(database, newest, github_app) == []
    assert deployed(database, newest) == "pending"
    assert running(db_session) == newest


def test_the_default_ref_is_the_branch_head_and_a_sha_keeps_the_branch(
    deploying: FlaskClient,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    admin_headers: dict[str, str],
) -> None:
    first = commit(seeded, "1")
    head = commit(seeded, "2")
    url = f"/v1/services/{service_id(db_session)}/deploy"

    by_default = deploying.post(url, json={}, headers=admin_headers)
    by_sha = deploying.post(url, json={"ref": first[:10]}, headers=admin_headers)

    assert by_default.status_code == 202, by_default.json
    assert (by_default.json["commit_sha"], by_default.json["ref"]) == (head, "master")
    assert by_sha.status_code == 202, by_sha.json
    assert (by_sha.json["commit_sha"], by_sha.json["ref"]) == (first, first[:10])
    assert by_sha.json["branch"] == "master"  # images keep the branch's tag
    assert by_sha.json["id"] != by_default.json["id"]


def test_an_unknown_or_invalid_ref_is_422_and_a_reader_cannot_deploy(
    deploying: FlaskClient,
    db_session: Session,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
) -> None:
    url = f"/v1/services/{service_id(db_session)}/deploy"

    unknown = deploying.post(url, json={"ref": "v9.9.9"}, headers=admin_headers)
    invalid = deploying.post(url, json={"ref": "a..b"}, headers=admin_headers)
    forbidden = deploying.post(url, json={"ref": "master"}, headers=read_headers)
    missing = deploying.post("/v1/services/999/deploy", json={}, headers=admin_headers)

    assert unknown.status_code == 422
    assert (
        "'v9.9.9' is not a branch, tag or commit of Codertocat/Hello-World"
        in (unknown.json["message"])
    )
    assert invalid.status_code == 422 and "ref" in invalid.json["details"]
    assert forbidden.status_code == 403
    assert missing.status_code == 404
    assert builds_by_commit(db_session) == {}


def test_github_failing_is_503_and_builds_nothing(
    deploying: FlaskClient,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    admin_headers: dict[str, str],
) -> None:
    seeded.state.fail("*/commits/*", method="GET", times=1_000)

    answer = deploying.post(
        f"/v1/services/{service_id(db_session)}/deploy", json={}, headers=admin_headers
    )

    assert answer.status_code == 503, answer.json
    assert "try again" in answer.json["message"]
    assert builds_by_commit(db_session) == {}


def test_a_service_tracking_tags_deploys_the_newest_tag_pushed(
    deploying: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    admin_headers: dict[str, str],
) -> None:
    url = f"/v1/services/{service_id(db_session)}"
    refused = deploying.patch(url, json={"track_tags": "v["}, headers=admin_headers)
    assert refused.status_code == 422 and "track_tags" in refused.json["details"]
    patched = deploying.patch(url, json={"track_tags": "v*"}, headers=admin_headers)
    assert patched.status_code == 200 and patched.json["track_tags"] == "v*"
    older = commit(seeded, "1")
    newer = commit(seeded, "2")

    branch_push = post(deploying, "push", push_payload(seeded, newer))
    process(database, branch_push, github_app)
    assert "no service tracks" in (delivery(db_session, branch_push).outcome or "")
    other = post(deploying, "push", tagged(seeded, "nightly", newer, 1_700_000_050))
    process(database, other, github_app)
    assert "no service of" in (delivery(db_session, other).outcome or "")

    process(
        database,
        post(deploying, "push", tagged(seeded, "v1.0.0", newer, 1_700_000_100)),
        github_app,
    )
    # A later tag on an older commit (an annotated one: its push names the tag object).
    after = tag(seeded, "v1.0.1", older, annotated=True)
    assert after != older
    hotfix = tagged(seeded, "v1.0.1", older, 1_700_000_200, after)
    process(database, post(deploying, "push", hotfix), github_app)
    assert start(database, older, github_app) != []
    assert builds_by_commit(db_session)[newer][0] == "cancelled"
    assert builds_by_commit(db_session)[older] == ("queued", None)
    assert deployed(database, older) == "pending"

    # A tag pushed before the running one, delivered late, does not replace it.
    late = post(deploying, "push", tagged(seeded, "v0.9.0", newer, 1_700_000_150))
    process(database, late, github_app)
    assert "a newer push" in (delivery(db_session, late).outcome or "")
    db_session.expire_all()
    refs = [(b.ref, b.branch) for b in db_session.scalars(select(Build).order_by(Build.id))]
    assert refs == [("v1.0.0", "v1.0.0"), ("v1.0.1", "v1.0.1")]
    assert running(db_session) == older

    # Tracking tags, the backstop leaves the branch head alone; back on the branch, it builds.
    head = commit(seeded, "3")
    assert backstop.reconcile_branches(db_session, github_app) == []
    back = deploying.patch(url, json={"track_tags": None}, headers=admin_headers)
    assert back.status_code == 200 and back.json["track_tags"] is None
    assert len(backstop.reconcile_branches(db_session, github_app)) == 1
    assert builds_by_commit(db_session)[head] == ("queued", None)


def test_the_backstop_leaves_a_chosen_deploy_alone(
    deploying: FlaskClient,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    admin_headers: dict[str, str],
) -> None:
    old = commit(seeded, "1")
    commit(seeded, "2")  # the branch head, never pushed through a webhook
    chosen = deploying.post(
        f"/v1/services/{service_id(db_session)}/deploy", json={"ref": old}, headers=admin_headers
    )
    assert chosen.status_code == 202

    # The head was committed before the deploy was asked for: not the backstop's to build.
    assert backstop.reconcile_branches(db_session, github_app) == []
    assert set(builds_by_commit(db_session)) == {old}


@pytest.fixture
def live(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    yield server
    server.stop()


def test_portside_deploy_with_and_without_ref(
    deploying: FlaskClient,
    live: LiveServer,
    seeded: GitHubServer,  # noqa: F811
    admin_headers: dict[str, str],
    tmp_path: Any,
) -> None:
    old = commit(seeded, "1")
    tag(seeded, "v1.2.0", old)
    head = commit(seeded, "2")
    env = {
        "PORTSIDE_URL": live.url,
        "PORTSIDE_DATA_DIR": str(tmp_path / "data"),
        "PORTSIDE_TOKEN": admin_headers["Authorization"].split(" ", 1)[1],
    }

    tagged = run_portside(["deploy", "hello", "--ref", "v1.2.0"], env)
    default = run_portside(["deploy", "hello", "--json"], env)

    assert tagged.code == 0, tagged
    assert tagged.stdout_lines[0].startswith(f"deploying hello at v1.2.0: build 1 of {old[:10]}")
    assert default.code == 0, default
    assert '"commit_sha": "' + head + '"' in default.stdout
    assert_one_line_failure(
        run_portside(["deploy", "hello", "--ref", "v9"], env), 2, "'v9' is not a branch"
    )
    assert_one_line_failure(run_portside(["deploy", "nope"], env), 3, "nope")


def test_a_bare_sha_off_the_branch_is_refused_and_deploys_by_its_branch_name(
    deploying: FlaskClient,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    admin_headers: dict[str, str],
) -> None:
    """GitHub resolves a bare SHA that only a fork holds as if it were the repository's:
    deploying it would build a stranger's code as the team's, with its secrets. A SHA must
    be in the history of the service's branch; other commits go by branch or tag name."""
    commit(seeded, "1")
    side = commit(seeded, "side", branch="feature")
    url = f"/v1/services/{service_id(db_session)}/deploy"

    by_sha = deploying.post(url, json={"ref": side[:12]}, headers=admin_headers)

    assert by_sha.status_code == 422, by_sha.json
    assert f"commit {side[:10]} is not in the history of master" in by_sha.json["message"]
    assert builds_by_commit(db_session) == {}
    by_branch = deploying.post(url, json={"ref": "feature"}, headers=admin_headers)
    assert by_branch.status_code == 202, by_branch.json
    assert by_branch.json["commit_sha"] == side
