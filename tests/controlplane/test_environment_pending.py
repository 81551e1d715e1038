"""An environment that waits says for what (``pending_reason``): the build it waits for
(with why a queued one is not taken), no agent of its host seen lately, the agent to run
its deployment, an approval; in the API, ``portside environments``/``previews list`` and
on the dashboard's services page. Null once it runs."""

from __future__ import annotations

import datetime as dt

from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.models import Build, Deployment, Environment, Host, utcnow
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

OFFLINE = "no agent online for host web-1"


def host_seen(database: Database, ago: dt.timedelta | None) -> None:
    """The agent of web-1 last reported ``ago`` (None: never)."""
    with database.session_scope() as session:
        host = session.scalars(select(Host).where(Host.name == "web-1")).one()
        host.last_seen_at = None if ago is None else utcnow() - ago


def environment_of(database: Database, build_id: int) -> int:
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        return build.environment_id


def pending_reason(client: FlaskClient, headers: dict[str, str], environment_id: int) -> object:
    response = client.get(f"/v1/environments/{environment_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json["pending_reason"]


def test_the_api_says_what_a_waiting_environment_waits_for(
    client: FlaskClient,
    read_headers: dict[str, str],
    database: Database,
    service_id: int,  # noqa: F811
) -> None:
    build_id = new_build(database, service_id)
    environment_id = environment_of(database, build_id)
    queued = f"waiting for build #{build_id} (queued: no build worker online)"

    assert pending_reason(client, read_headers, environment_id) == f"{queued}; {OFFLINE}"
    listed = client.get("/v1/environments", headers=read_headers).json
    assert [e["pending_reason"] for e in listed] == [f"{queued}; {OFFLINE}"]

    host_seen(database, dt.timedelta(seconds=1))
    assert pending_reason(client, read_headers, environment_id) == queued

    with database.session_scope() as session:  # a worker took the build
        build = session.get(Build, build_id)
        assert build is not None
        build.status, build.worker, build.heartbeat_at = "running", "builds@w", utcnow()
        build.environment.status = "building"
    expected = f"waiting for build #{build_id} (running)"
    assert pending_reason(client, read_headers, environment_id) == expected

    with database.session_scope() as session:  # built; the agent has not run it yet
        build = session.get(Build, build_id)
        assert build is not None
        build.status = "succeeded"
        deployment = Deployment(environment_id=environment_id, build_id=build_id)
        session.add(deployment)
        session.flush()
        deployment_id = deployment.id
        build.environment.current_deployment_id = deployment_id
        build.environment.status = "deploying"
    expected = f"waiting for host web-1's agent to run deployment #{deployment_id}"
    assert pending_reason(client, read_headers, environment_id) == expected

    host_seen(database, dt.timedelta(hours=1))  # the agent stopped reporting
    assert pending_reason(client, read_headers, environment_id) == OFFLINE

    with database.session_scope() as session:
        environment = session.get(Environment, environment_id)
        assert environment is not None
        environment.status = "running"
    assert pending_reason(client, read_headers, environment_id) is None


def test_an_environment_awaiting_approval_says_so(
    client: FlaskClient,
    read_headers: dict[str, str],
    database: Database,
    service_id: int,  # noqa: F811
) -> None:
    environment_id = environment_of(database, new_build(database, service_id, status="cancelled"))
    host_seen(database, dt.timedelta(seconds=1))
    with database.session_scope() as session:
        environment = session.get(Environment, environment_id)
        assert environment is not None
        environment.status, environment.head_sha = "awaiting_approval", "ab12cd3" + "0" * 33

    assert pending_reason(client, read_headers, environment_id) == "waiting for approval of ab12cd3"


def test_the_cli_and_the_dashboard_show_why_an_environment_is_pending(
    reader: Cli,  # noqa: F811
    viewer: FlaskClient,  # noqa: F811
    database: Database,
    service_id: int,  # noqa: F811
) -> None:
    build_id = new_build(database, service_id)
    reason = f"waiting for build #{build_id} (queued: no build worker online); {OFFLINE}"

    table = reader("environments", "list")
    assert table.code == 0, table
    assert f"pending ({reason})" in table.stdout_lines[1], table
    page = viewer.get("/").text
    assert f'<div class="muted reason pending-reason">{reason}</div>' in page

    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        build.environment.status = "running"
    assert "pending (" not in reader("environments", "list").stdout
    assert "pending-reason" not in viewer.get("/").text
