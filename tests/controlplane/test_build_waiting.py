"""A queued build nobody can take says why: with no build worker of its lane seen
lately (heartbeating a build within WORKERS_SEEN_WITHIN), its ``waiting_reason`` is
"no build worker online", in the API, ``portside builds list``/``show`` and on the
dashboard's build page; with one, and for a build that is not queued, it is null."""

from __future__ import annotations

import datetime as dt

from flask.testing import FlaskClient

from controlplane.db import Database
from controlplane.models import Build, utcnow
from controlplane.services import dispatch
from tests.controlplane.test_cli_client import (
    Cli,
    admin,  # noqa: F401 (a fixture)
    api_env,  # noqa: F401 (a fixture)
    live,  # noqa: F401 (a fixture)
    new_build,
    reader,  # noqa: F401 (a fixture)
    service_id,  # noqa: F401 (a fixture)
)
from tests.dashboard.test_dashboard import viewer  # noqa: F401 (a fixture)


def seen(database: Database, build_id: int, *, ago: dt.timedelta, untrusted: bool = False) -> None:
    """Make the build one a worker is running, its last heartbeat ``ago``."""
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        build.status, build.worker = "running", "builds@worker-1"
        build.heartbeat_at, build.untrusted = utcnow() - ago, untrusted


def reason(client: FlaskClient, headers: dict[str, str], build_id: int) -> str | None:
    response = client.get(f"/v1/builds/{build_id}", headers=headers)
    assert response.status_code == 200, response.text
    value: str | None = response.json["waiting_reason"]
    return value


def test_a_queued_build_with_no_worker_online_says_so_until_one_of_its_lane_is_seen(
    client: FlaskClient,
    read_headers: dict[str, str],
    database: Database,
    service_id: int,  # noqa: F811
) -> None:
    queued = new_build(database, service_id)
    other = new_build(database, service_id, status="running")

    assert reason(client, read_headers, queued) == dispatch.NO_WORKER
    assert reason(client, read_headers, other) is None  # not queued: nothing to explain
    listed = client.get("/v1/builds", headers=read_headers).json
    assert {b["id"]: b["waiting_reason"] for b in listed} == {
        queued: dispatch.NO_WORKER,
        other: None,
    }

    # A worker seen longer ago than WORKERS_SEEN_WITHIN does not count; nor one of forks.
    seen(database, other, ago=dispatch.WORKERS_SEEN_WITHIN + dt.timedelta(minutes=1))
    assert reason(client, read_headers, queued) == dispatch.NO_WORKER
    seen(database, other, ago=dt.timedelta(seconds=5), untrusted=True)
    assert reason(client, read_headers, queued) == dispatch.NO_WORKER

    seen(database, other, ago=dt.timedelta(seconds=5))
    assert reason(client, read_headers, queued) is None


def test_a_forks_build_waits_for_a_worker_of_its_own_lane(
    client: FlaskClient,
    read_headers: dict[str, str],
    database: Database,
    service_id: int,  # noqa: F811
) -> None:
    fork = new_build(database, service_id)
    trusted = new_build(database, service_id)
    with database.session_scope() as session:
        build = session.get(Build, fork)
        assert build is not None
        build.untrusted = True
    seen(database, trusted, ago=dt.timedelta(seconds=5))  # a trusted worker at work

    assert reason(client, read_headers, fork) == dispatch.NO_UNTRUSTED_WORKER


def test_the_cli_and_the_dashboard_show_why_a_build_waits(
    reader: Cli,  # noqa: F811
    viewer: FlaskClient,  # noqa: F811
    database: Database,
    service_id: int,  # noqa: F811
) -> None:
    queued = new_build(database, service_id)

    table = reader("builds", "list")
    assert table.code == 0, table
    assert "queued (waiting: no build worker online)" in table.stdout_lines[1], table
    show = reader("builds", "show", str(queued))
    assert show.code == 0, show
    assert "status    queued (waiting: no build worker online)" in show.stdout_lines, show
    page = viewer.get(f"/builds/{queued}").text
    assert 'id="waiting-reason">waiting: no build worker online</p>' in page

    running = new_build(database, service_id)
    seen(database, running, ago=dt.timedelta(seconds=5))
    assert "waiting" not in reader("builds", "show", str(queued)).stdout
    assert 'id="waiting-reason"' not in viewer.get(f"/builds/{queued}").text
