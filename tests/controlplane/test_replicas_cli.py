"""``portside services create --host A --host B --replicas N``: over the API and straight to
the database, the service runs production on both hosts with N replicas each."""

from __future__ import annotations

import json

from sqlalchemy import select

from controlplane.db import Database
from controlplane.models import Service
from controlplane.services import hosts

# The fixtures these tests share with the CLI's own tests.
from tests.controlplane.test_cli import (  # noqa: F401
    Run,
    migrated,
    portside,
    sqlite_database,
    sqlite_env,
)
from tests.controlplane.test_cli_client import Cli, admin, api_env, live  # noqa: F401

ARGS = ("services", "create", "two", "--repository", "o/two", "--port", "8080")


def test_create_on_two_hosts_over_the_api(admin: Cli, database: Database) -> None:  # noqa: F811
    with database.session_scope() as session:
        for name in ("web-1", "web-2"):
            hosts.create_host(session, name, "test")
    created = admin(*ARGS, "--host", "web-2", "--host", "web-1", "--replicas", "3", "--json")
    assert created.code == 0, created
    service = json.loads(created.stdout)
    assert service["hosts"] == ["web-2", "web-1"] and service["replicas"] == 3
    # Another service (named "three"), refused by the API for its replicas alone.
    refused = admin(*ARGS[:2], "three", *ARGS[3:], "--host", "web-1", "--replicas", "21")
    assert refused.code == 2 and "replicas" in refused.stderr, refused
    assert "usage:" not in refused.stderr


def test_create_on_two_hosts_in_the_database(
    migrated: Run,  # noqa: F811
    sqlite_database: Database,  # noqa: F811
) -> None:
    for name in ("web-1", "web-2"):
        assert migrated("hosts", "create", name).code == 0
    created = migrated(*ARGS, "--host", "web-1", "--host", "web-2", "--replicas", "2")
    assert created.code == 0, created
    with sqlite_database.session_scope() as session:
        service = session.scalar(select(Service).where(Service.name == "two"))
        assert service is not None and service.replicas == 2
        assert [service.host.name, *(row.host.name for row in service.extra_hosts)] == [
            "web-1",
            "web-2",
        ]
