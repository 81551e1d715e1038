"""The installation roster against a GitHub that paginates, holds empty repositories and
fails: every repository GitHub lists is registered, one failing never fails the roster,
and a missed event is repaired by the reconciliation (on events and daily)."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import Installation, Repository
from controlplane.services import installations
from tests.controlplane.test_intake_processing import (
    INSTALLATION,
    OWNER,
    delivery,
    github_app,  # noqa: F401 (a fixture)
    post,
    process,
)
from tests.githubserver.server import GitHubServer
from tests.helpers import json_payload

COMPOSE = "services:\n  web:\n    build: .\n"


def installation_event(action: str, repositories: list[dict[str, Any]]) -> dict[str, Any]:
    payload = json_payload("installation__created.payload.json")
    payload["action"] = action
    payload["installation"]["id"] = INSTALLATION
    payload["repositories"] = repositories
    return payload


def live_roster(db_session: Session) -> dict[str, str | None]:
    db_session.expire_all()
    query = select(Repository).where(Repository.removed_at.is_(None))
    return {r.full_name: r.compose_path for r in db_session.scalars(query)}


def test_an_empty_repository_and_150_on_two_pages_are_all_registered(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    github_server: GitHubServer,
    github_app: GitHubApp,  # noqa: F811
) -> None:
    state = github_server.state
    state.add_installation(INSTALLATION, OWNER)
    state.add_repository(INSTALLATION, f"{OWNER}/empty")  # no commit at all
    expected: dict[str, str | None] = {f"{OWNER}/empty": None}
    for number in range(149):
        name = f"{OWNER}/app-{number:03}"
        state.add_repository(INSTALLATION, name)
        compose = number % 10 == 0
        state.commit(name, {"compose.yaml": COMPOSE} if compose else {"Dockerfile": "FROM x\n"})
        expected[name] = "compose.yaml" if compose else None
    # The event names the empty one only; GitHub's list is the roster.
    empty = github_server.repository_json(f"{OWNER}/empty")
    delivery_id = post(client, "installation", installation_event("created", [empty]))
    process(database, delivery_id, github_app)

    assert delivery(db_session, delivery_id).status == "processed"
    assert live_roster(db_session) == expected
    unchecked = select(Repository).where(Repository.compose_checked_at.is_(None))
    assert list(db_session.scalars(unchecked)) == []
    listing = [path for _, path in state.api_requests if path.startswith("/installation/")]
    assert len(listing) == 2 and "page=2" in listing[1]  # 100 a page: two requests


def test_one_failing_repository_never_fails_the_roster_and_a_reconciliation_repairs_it(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    github_server: GitHubServer,
    github_app: GitHubApp,  # noqa: F811
) -> None:
    state = github_server.state
    state.add_installation(INSTALLATION, OWNER)
    for name, files in (("broken", {"compose.yml": COMPOSE}), ("plain", {"Dockerfile": "x"})):
        state.add_repository(INSTALLATION, f"{OWNER}/{name}")
        state.commit(f"{OWNER}/{name}", files)
    broken = state.fail(f"/repos/{OWNER}/broken/contents*", method="GET", status=500, times=99)
    delivery_id = post(client, "installation", installation_event("created", []))
    process(database, delivery_id, github_app)

    assert delivery(db_session, delivery_id).status == "processed"
    assert live_roster(db_session) == {f"{OWNER}/broken": None, f"{OWNER}/plain": None}
    row = db_session.scalar(select(Repository).where(Repository.full_name == f"{OWNER}/broken"))
    assert row is not None and row.compose_checked_at is None and broken.failed == 1

    # GitHub recovers; meanwhile a repository came and one went without an event.
    state.faults.remove(broken)
    state.remove_repository(f"{OWNER}/plain")
    state.add_repository(INSTALLATION, f"{OWNER}/later")
    state.commit(f"{OWNER}/later", {"docker-compose.yaml": COMPOSE})
    results = installations.reconcile_all(database, github_app)

    assert results == {INSTALLATION: "2 repositories, 1 removed"}
    assert live_roster(db_session) == {
        f"{OWNER}/broken": "compose.yml",
        f"{OWNER}/later": "docker-compose.yaml",
    }


def test_unsuspend_reconciles_and_a_rate_limit_is_waited_out(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    github_server: GitHubServer,
    github_app: GitHubApp,  # noqa: F811
) -> None:
    state = github_server.state
    state.add_installation(INSTALLATION, OWNER)
    state.add_repository(INSTALLATION, f"{OWNER}/first")
    process(database, post(client, "installation", installation_event("created", [])), github_app)
    process(database, post(client, "installation", installation_event("suspend", [])), github_app)
    db_session.expire_all()
    installation = db_session.get(Installation, INSTALLATION)
    assert installation is not None and installation.suspended_at is not None

    state.add_repository(INSTALLATION, f"{OWNER}/second")  # added while suspended
    limit = state.rate_limit("/installation/repositories", retry_after=1, status=429)
    process(database, post(client, "installation", installation_event("unsuspend", [])), github_app)

    db_session.expire_all()
    assert installation.suspended_at is None
    assert limit.failed == 1
    assert live_roster(db_session) == {f"{OWNER}/first": None, f"{OWNER}/second": None}


def test_two_transactions_registering_the_same_repository_at_once_both_succeed(
    database: Database,
) -> None:
    """A webhook and a control worker's start-up sync may register the same installation
    and repository at the same moment: the second waits for the first and then finds the
    rows, where a plain INSERT failed its whole transaction (UniqueViolation)."""
    listed = [{"id": 4242, "full_name": "Codertocat/raced", "private": True}]
    account = {"id": 77, "account": {"login": "Codertocat", "type": "User"}}
    first_inserted, second_started = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with database.session_scope() as session:
                installation = installations._upsert_installation(session, account)
                installations.reconcile(session, installation, None, listed)
                session.flush()
                first_inserted.set()
                second_started.wait(10)
                time.sleep(0.5)  # the second is now waiting on these rows' keys
        except BaseException as exc:
            errors.append(exc)
            first_inserted.set()

    def second() -> None:
        first_inserted.wait(10)
        second_started.set()
        try:
            with database.session_scope() as session:
                installation = installations._upsert_installation(session, account)
                installations.reconcile(session, installation, None, listed)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    with database.session_scope() as session:
        rows = session.scalars(select(Repository).where(Repository.id == 4242)).all()
        assert [(r.full_name, r.installation_id) for r in rows] == [("Codertocat/raced", 77)]
        assert session.get(Installation, 77) is not None
