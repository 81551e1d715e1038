"""``portside approve ENV`` against a running control plane, over real HTTP: it releases a
deployment held for approval, with an admin token only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from controlplane.db import Database
from controlplane.models import Build, Environment
from controlplane.services import catalog, deployments, hosts, pushes, servicerules
from tests.controlplane.test_cli import Result, assert_one_line_failure, run_portside
from tests.support.live import LiveServer

DIGEST = "sha256:" + "ef" * 32


@pytest.fixture
def live(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    yield server
    server.stop()


def held_build(database: Database) -> int:
    """A production environment that requires approval, a build held there."""
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="Codertocat/Hello", branch="main", host="web-1"
            ),
            "test",
        )
        environment = pushes.production_environment(session, service)
        environment.approval_required = True
        build = pushes.start_build(session, service, environment, "a" * 40, branch="main")
        assert build is not None
        build.images = {"app": {"repository": "registry.test/hello", "tag": "t", "digest": DIGEST}}
        session.flush()
        assert deployments.record_deployment(session, service.id, build.id, "worker") is None
        return build.id


def test_approve_releases_the_held_deployment_for_admins_only(
    live: LiveServer,
    database: Database,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
    tmp_path: Path,
) -> None:
    build_id = held_build(database)

    def portside(headers: dict[str, str], *args: str) -> Result:
        environ = {
            "PORTSIDE_URL": live.url,
            "PORTSIDE_DATA_DIR": str(tmp_path / "data"),
            "PORTSIDE_TOKEN": headers["Authorization"].split(" ", 1)[1],
        }
        return run_portside(list(args), environ)

    assert_one_line_failure(portside(read_headers, "approve", "hello"), 4)
    assert_one_line_failure(
        portside(admin_headers, "approve", "hello", "--sha", "b" * 40),
        2,
        "waits to deploy aaaaaaa",
    )
    approved = portside(admin_headers, "approve", "hello")
    assert approved.code == 0, approved
    assert "deployment " in approved.stdout and "is deploying" in approved.stdout
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None and build.status == "succeeded"
        environment = session.scalar(
            select(Environment).where(Environment.id == build.environment_id)
        )
        assert environment is not None and environment.current_deployment is not None
        assert environment.current_deployment.build_id == build_id
