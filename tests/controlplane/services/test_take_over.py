"""A build whose worker dies is taken over once per step: losing the worker twice in a row
in the same step (a crafted input that crashes it) fails the build instead."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from controlplane.db import Database
from controlplane.errors import Conflict
from controlplane.models import Build, utcnow
from controlplane.services import builds, catalog, hosts, pushes, servicerules, stepclaims

STALE = dt.timedelta(seconds=60)


@pytest.fixture
def build_id(database: Database) -> int:
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="o/hello", branch="main", host="web-1"
            ),
            "test",
        )
        build = pushes.start_build(
            session, service, pushes.production_environment(session, service), "a" * 40, branch="m"
        )
        assert build is not None
        session.flush()
        return build.id


def run_until(database: Database, build_id: int, attempt: int, dies_in: str) -> None:
    """Attempt ``attempt`` runs its steps and its worker dies in step ``dies_in``."""
    for step in ("clone", "build", "push", "upload_compose"):
        with database.session_scope() as session:
            stepclaims.claim_step(session, build_id, step, attempt, f"w{attempt}")
            if step == dies_in:
                session.execute(
                    update(Build)
                    .where(Build.id == build_id)
                    .values(heartbeat_at=utcnow() - 2 * STALE)
                )
                return
            builds.finish_step(session, build_id, step, attempt, succeeded=True)


def take_over_stale(database: Database) -> list[int]:
    """What the control worker's watchdog does (tasks.control.take_over_stale_builds)."""
    with database.session_scope() as session:
        stale = builds.stale_builds(session, STALE)
        for build in stale:
            builds.take_over(session, build)
        return [build.id for build in stale]


def test_a_step_that_loses_its_worker_twice_fails_the_build(
    database: Database, build_id: int
) -> None:
    run_until(database, build_id, 1, dies_in="build")
    assert take_over_stale(database) == [build_id]
    with database.session_scope() as session:
        build = builds.get_build(session, build_id)
        assert (build.status, build.attempt, build.failed_step) == ("queued", 2, "build")
        assert build.error is not None and "during step build" in build.error

    run_until(database, build_id, 2, dies_in="build")
    assert take_over_stale(database) == [build_id]

    with database.session_scope() as session:
        build = builds.get_build(session, build_id)
        assert (build.status, build.attempt, build.failed_step) == ("failed", 2, "build")
        assert build.error is not None and "attempts 1 and 2" in build.error
        assert build.environment.status == "failed"
        assert {s.name: s.status for s in build.steps} == {
            "clone": "succeeded",
            "build": "failed",
            "push": "skipped",
            "upload_compose": "skipped",
            "record_deployment": "skipped",
        }
    assert take_over_stale(database) == []  # failed: the watchdog leaves it alone
    with database.session_scope() as session, pytest.raises(Conflict):
        stepclaims.claim_step(session, build_id, "clone", 3, "w3")


def test_losing_workers_in_different_steps_is_taken_over_again(
    database: Database, build_id: int
) -> None:
    run_until(database, build_id, 1, dies_in="clone")
    take_over_stale(database)
    run_until(database, build_id, 2, dies_in="build")
    take_over_stale(database)
    with database.session_scope() as session:
        build = builds.get_build(session, build_id)
        assert (build.status, build.attempt, build.failed_step) == ("queued", 3, "build")
