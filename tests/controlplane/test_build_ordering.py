"""The newest commit of a branch is the one built and deployed, by ancestry (the push
payloads, then GitHub's compare API), not by the order deliveries arrive in; a build
superseded while it runs is told to stop."""

from __future__ import annotations

import datetime as dt

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from buildworker import channel
from controlplane.db import Database
from controlplane.errors import Conflict
from controlplane.github.app import GitHubApp
from controlplane.models import Build
from controlplane.services import ancestry, builds, pushes, stepclaims
from tests.controlplane.test_intake_processing import (
    OWNER,
    delivery,
    github_app,  # noqa: F401 (a fixture)
    post,
    process,
    push_payload,
    seeded,  # noqa: F401 (a fixture)
    service,  # noqa: F401 (a fixture)
)
from tests.githubserver.server import GitHubServer

REPOSITORY = f"{OWNER}/Hello-World"
SAME_SECOND = 1_700_000_000


def commit(server: GitHubServer, content: str, branch: str = "master") -> str:
    return server.state.commit(REPOSITORY, {"version.txt": content}, branch=branch)


def pushed(server: GitHubServer, sha: str, before: str | None = None) -> dict[str, object]:
    """The push of ``sha`` in the same second as every other here; ``before`` is the
    branch's head it replaced, as GitHub names it (None: a payload that names none)."""
    payload = push_payload(server, sha, pushed_at=SAME_SECOND)
    payload["commits"] = []
    if before is not None:
        payload["before"] = before
    else:
        payload.pop("before", None)
    return payload


def builds_by_commit(db_session: Session) -> dict[str, tuple[str, str | None]]:
    db_session.expire_all()
    return {b.commit_sha: (b.status, b.error) for b in db_session.scalars(select(Build))}


def start(database: Database, sha: str, github: GitHubApp | None) -> list[int]:
    """What the start_build task does for the build of ``sha``."""
    with database.session_scope() as session:
        build = session.scalars(select(Build).where(Build.commit_sha == sha)).one()
        compare = pushes.github_compare(github, build.service)
        return builds.supersede_older(session, build, compare)


def test_a_parent_delivered_after_its_child_in_the_same_second_is_not_built(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service: str,  # noqa: F811
) -> None:
    first = commit(seeded, "1")
    parent = commit(seeded, "2")
    child = commit(seeded, "3")
    process(database, post(client, "push", pushed(seeded, child, before=parent)), github_app)
    late = post(client, "push", pushed(seeded, parent, before=first))
    process(database, late, github_app)
    assert builds_by_commit(db_session) == {child: ("queued", None)}
    assert f"a newer push ({child[:7]}) is built" in (delivery(db_session, late).outcome or "")


def test_github_decides_what_the_payloads_cannot_and_its_failure_falls_back(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service: str,  # noqa: F811
) -> None:
    parent = commit(seeded, "1")
    child = commit(seeded, "2")
    # Payloads that name no earlier head: only GitHub can tell the two apart.
    process(database, post(client, "push", pushed(seeded, child)), github_app)
    process(database, post(client, "push", pushed(seeded, parent)), github_app)
    assert builds_by_commit(db_session) == {child: ("queued", None), parent: ("queued", None)}

    # GitHub failing: neither start fails, and the branch's later push (here the parent,
    # which arrived last) is kept: the child cancels itself.
    failing = seeded.state.fail("*/compare/*", method="GET", times=1_000)
    child_id = start(database, child, github_app)
    assert failing.failed >= 1 and len(child_id) == 1
    assert start(database, parent, github_app) == []
    assert builds_by_commit(db_session)[child][0] == "cancelled"
    assert builds_by_commit(db_session)[parent] == ("queued", None)
    seeded.state.faults.remove(failing)

    # GitHub answering again: a push the payloads cannot place is compared there.
    grandchild = commit(seeded, "3")
    process(database, post(client, "push", pushed(seeded, grandchild)), github_app)
    assert start(database, grandchild, github_app) != []
    statuses = builds_by_commit(db_session)
    assert statuses[parent][0] == "cancelled" and f"of {grandchild[:7]}" in (
        statuses[parent][1] or ""
    )
    assert statuses[grandchild] == ("queued", None)


def test_a_parent_started_after_its_child_cancels_itself(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service: str,  # noqa: F811
) -> None:
    parent = commit(seeded, "1")
    child = commit(seeded, "2")
    process(database, post(client, "push", pushed(seeded, child)), github_app)
    process(database, post(client, "push", pushed(seeded, parent)), github_app)
    start(database, child, github_app)
    start(database, parent, github_app)
    statuses = builds_by_commit(db_session)
    assert statuses[child] == ("queued", None)
    assert statuses[parent][0] == "cancelled"
    assert f"of {child[:7]}" in (statuses[parent][1] or "")


def test_a_force_push_follows_the_branch_s_newest_push(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service: str,  # noqa: F811
) -> None:
    rewritten = commit(seeded, "rewritten", branch="rewrite")  # from master's head
    old = commit(seeded, "old")  # master moves on: the two have diverged
    process(database, post(client, "push", pushed(seeded, old)), github_app)
    force = pushed(seeded, rewritten, before=old)
    force["forced"] = True
    process(database, post(client, "push", force), github_app)
    start(database, old, github_app)
    start(database, rewritten, github_app)
    statuses = builds_by_commit(db_session)
    assert statuses[rewritten] == ("queued", None)
    assert statuses[old][0] == "cancelled"


def test_a_running_build_superseded_is_told_to_stop(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,  # noqa: F811
    github_app: GitHubApp,  # noqa: F811
    service: str,  # noqa: F811
    redis_url: str,
) -> None:
    parent = commit(seeded, "1")
    child = commit(seeded, "2")
    process(database, post(client, "push", pushed(seeded, parent)), github_app)
    with database.session_scope() as session:
        running = session.scalars(select(Build).where(Build.commit_sha == parent)).one().id
        stepclaims.claim_step(session, running, "clone", 1, "build-1@test")
    process(database, post(client, "push", pushed(seeded, child, before=parent)), github_app)
    store = redis.Redis.from_url(redis_url)
    assert channel.stop_reason(store, running, 1) is None
    assert start(database, child, github_app) == [running]
    reason = channel.stop_reason(store, running, 1)
    assert reason is not None and f"of {child[:7]}" in reason
    with database.session_scope() as session, pytest.raises(Conflict, match="cancelled"):
        stepclaims.heartbeat(session, running, 1)


def test_payloads_chain_through_pushes_and_a_force_push_names_no_ancestor() -> None:
    a, b, c, d, x = (ch * 40 for ch in "abcde")
    facts: ancestry.Facts = {}
    for payload in (
        {"before": a, "after": b, "commits": [{"id": b}]},
        {"before": b, "after": c, "commits": [{"id": x}, {"id": c}]},
        {"before": c, "after": d, "forced": True, "commits": []},
    ):
        facts.setdefault(str(payload["after"]), set()).update(ancestry.payload_ancestors(payload))
    assert ancestry.descends(facts, a, c) and ancestry.descends(facts, x, c)
    assert not ancestry.descends(facts, c, a)
    assert not ancestry.descends(facts, c, d)  # the branch was rewritten over c
    moment = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    later = moment + dt.timedelta(seconds=1)
    # The payloads decide whatever the order of the pushes says...
    assert ancestry.is_newer(ancestry.Pushed(c, moment, 1), ancestry.Pushed(a, later, 2), facts)
    # ...and where they cannot, the later push wins, then the later arrival.
    assert ancestry.is_newer(ancestry.Pushed(d, later, 1), ancestry.Pushed(c, moment, 2), facts)
    assert ancestry.is_newer(ancestry.Pushed(d, moment, 2), ancestry.Pushed(c, moment, 1), facts)
    assert not ancestry.is_newer(
        ancestry.Pushed(d, moment, 1), ancestry.Pushed(c, moment, 2), facts
    )
