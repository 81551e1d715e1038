"""Log forwarding with Docker's logging drivers: ``PATCH /v1/services/{id}`` ``log_driver``
per environment kind, checked, audited and carried in the snapshot; the agent runs the
containers (and compose services) with it, tagged with the environment. Against a real
rsyslog: the lines reach it with the environment's tag while ``docker logs`` and
Portside's own ``GET /v1/environments/{id}/logs`` keep showing them (dual logging)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

import docker
import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.models import AuditEvent, Environment, Host, Service
from controlplane.services import catalog, deployments, hosts, pushes, servicerules
from hostagent import labels as lbl
from hostagent.agent import run_once
from hostagent.confighash import config_hash
from hostagent.logship import LogShipper
from hostagent.snapshot import parse_desired_state, parse_environment
from tests.controlplane.test_agent_api import auth, deploy, host_token
from tests.hostagent.factories import env_body, state_body
from tests.hostagent.test_apply_docker import (  # noqa: F401 - agent, images and uid are fixtures
    FakeSource,
    agent,
    desired,
    images,
    only,
    uid,
)
from tests.hostagent.test_logship_docker import CHATTY
from tests.support.rsyslog import Rsyslog, rsyslog

__all__ = ["host_token", "rsyslog"]  # fixtures, used by name

SYSLOG = "syslog-address"


def patch(
    client: FlaskClient, headers: dict[str, str], service_id: int, value: Any
) -> tuple[int, dict[str, Any]]:
    response = client.patch(
        f"/v1/services/{service_id}", json={"log_driver": value}, headers=headers
    )
    return response.status_code, response.get_json()


def hello_id(database: Database) -> int:
    with database.session_scope() as session:
        service = session.scalar(select(Service).where(Service.name == "hello"))
        assert service is not None
        return service.id


def generation(database: Database, host: str) -> int:
    with database.session_scope() as session:
        found = session.scalar(select(Host).where(Host.name == host))
        assert found is not None
        return found.generation


def test_log_driver_is_checked_audited_and_carried_for_its_kind(
    client: FlaskClient,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
    database: Database,
    host_token: str,
) -> None:
    service_id = hello_id(database)
    deploy(database, "a" * 40)
    status, body = patch(
        client,
        admin_headers,
        service_id,
        {"production": {"driver": "syslog", "options": {"tag": "mine", "env": "API_KEY"}}},
    )
    assert status == 422
    problems = body["details"]["log_driver"]
    assert any("options.tag: refused" in p for p in problems)
    assert any("options.env: refused" in p for p in problems)
    for refused in (
        {"production": {"driver": "splunk"}},
        {"staging": {"driver": "syslog"}},
        {"preview": {"driver": "gelf", "options": {"syslog-address": "udp://x:1"}}},
        {"production": {"driver": "syslog", "options": {"cache-disabled": "true"}}},
        ["syslog"],
    ):
        assert patch(client, admin_headers, service_id, refused)[0] == 422, refused
    wanted = {"production": {"driver": "syslog", "options": {SYSLOG: "udp://127.0.0.1:5514"}}}
    assert patch(client, read_headers, service_id, wanted)[0] == 403

    before = generation(database, "web-1")
    status, body = patch(client, admin_headers, service_id, {**wanted, "preview": None})
    assert status == 200, body
    assert body["log_driver"] == wanted  # null: Docker's default, not stored
    assert generation(database, "web-1") > before  # the agent recreates with it
    snapshot = client.get("/v1/agent/desired-state", headers=auth(host_token)).get_json()
    (environment,) = snapshot["environments"]
    assert environment["log_driver"] == wanted["production"]
    assert parse_desired_state(snapshot).environments[0].log_driver is not None
    with database.session_scope() as session:
        (event,) = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "service.log_driver")
        )
        assert event.detail["old"] == {} and event.detail["new"] == wanted

    # The same value again changes nothing; {} goes back to Docker's default.
    unchanged = generation(database, "web-1")
    assert patch(client, admin_headers, service_id, wanted)[0] == 200
    assert generation(database, "web-1") == unchanged
    status, body = patch(client, admin_headers, service_id, {})
    assert status == 200 and body["log_driver"] == {}
    snapshot = client.get("/v1/agent/desired-state", headers=auth(host_token)).get_json()
    assert "log_driver" not in snapshot["environments"][0]


def test_other_kinds_once_they_exist_and_only_changed_kinds_are_recreated(
    client: FlaskClient, admin_headers: dict[str, str], database: Database, host_token: str
) -> None:
    service_id = hello_id(database)
    staging = {"staging": {"driver": "journald"}}
    status, body = patch(client, admin_headers, service_id, staging)
    assert status == 422 and "log_driver.staging: not an environment kind" in str(body)
    with database.session_scope() as session:
        web_2 = session.scalar(select(Host).where(Host.name == "web-2"))
        assert web_2 is not None
        session.add(
            Environment(
                service_id=service_id,
                host_id=web_2.id,
                name="hello-staging",
                kind="staging",
                branch="develop",
            )
        )
    production = {"production": {"driver": "local", "options": {"max-size": "10m"}}}
    assert patch(client, admin_headers, service_id, production)[0] == 200
    before = {host: generation(database, host) for host in ("web-1", "web-2")}
    status, body = patch(client, admin_headers, service_id, {**production, **staging})
    assert status == 200, body
    assert body["log_driver"] == {**production, "staging": {"driver": "journald", "options": {}}}
    assert generation(database, "web-2") > before["web-2"]  # staging's host
    assert generation(database, "web-1") == before["web-1"]  # production is unchanged


def test_the_agent_refuses_a_snapshot_driver_the_rules_refuse() -> None:
    body = env_body("hello", log_driver={"driver": "syslog", "options": {"env": "API_KEY"}})
    state = parse_desired_state(state_body(body))
    assert not state.environments
    (refused,) = state.refused
    assert "log_driver.options.env: refused" in refused.reason


def test_a_driver_change_recreates_and_no_driver_changes_nothing() -> None:
    """Docker sets logging at creation: the config hash (what recreates) counts the driver
    when there is one, and an environment without one hashes as before it existed."""
    plain = parse_environment(env_body("hello"), "environment")
    syslog = {"driver": "syslog", "options": {SYSLOG: "udp://127.0.0.1:5514"}}
    forwarded = parse_environment(env_body("hello", log_driver=syslog), "environment")
    other = {"driver": "syslog", "options": {SYSLOG: "udp://127.0.0.1:5515"}}
    moved = parse_environment(env_body("hello", log_driver=other), "environment")
    hashes = {config_hash(plain), config_hash(forwarded), config_hash(moved)}
    assert len(hashes) == 3
    assert config_hash(plain) == config_hash(dataclasses.replace(forwarded, log_driver=None))


def production_running(database: Database, host: str, name: str, image: str) -> tuple[int, str]:
    """Service ``name`` on a new ``host`` with its production environment deployed from
    ``image`` (repository@digest); returns the environment's id and the host's token."""
    repository, digest = image.split("@")
    with database.session_scope() as session:
        _host, token = hosts.create_host(session, host, "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(name=name, repository=f"o/{name}", branch="main", host=host),
            "test",
        )
        service.port = 8080
        environment = pushes.production_environment(session, service)
        build = pushes.start_build(session, service, environment, "b" * 40, branch="main")
        assert build is not None
        build.images = {"app": {"repository": repository, "digest": digest}}
        session.flush()
        deployments.record_deployment(session, service.id, build.id, "test")
        return environment.id, token


class ToControlPlane:
    """The agent's log shipping, posting to the app under test with the host's token."""

    def __init__(self, client: FlaskClient, token: str) -> None:
        self.client = client
        self.token = token

    def __call__(self, batch: Mapping[str, Any]) -> None:
        response = self.client.post("/v1/agent/logs", json=dict(batch), headers=auth(self.token))
        assert response.status_code == 204, response.get_json()


def marker_number(line: str) -> int | None:
    text = line.rsplit("marker-", 1)
    return int(text[1]) if len(text) == 2 and text[1].strip().isdigit() else None


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
def test_a_container_forwards_to_rsyslog_and_portside_still_shows_it(
    client: FlaskClient,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
    database: Database,
    docker_client: docker.DockerClient,
    images: Any,  # noqa: F811 - the fixture
    agent: Any,  # noqa: F811 - the fixture
    uid: str,  # noqa: F811 - the fixture
    rsyslog: Rsyslog,
) -> None:
    host, name = f"host-{uid}", f"fwd{uid}"
    env_id, token = production_running(database, host, name, images("chatty", cmd=CHATTY))
    with database.session_scope() as session:
        service_id = session.scalar(select(Environment.service_id).where(Environment.id == env_id))
    wanted = {"production": {"driver": "syslog", "options": {SYSLOG: rsyslog.udp}}}
    status, body = patch(client, admin_headers, service_id, wanted)
    assert status == 200, body

    snapshot = client.get("/v1/agent/desired-state", headers=auth(token))
    source = FakeSource(parse_desired_state(snapshot.get_json()))
    assert only(run_once(agent, source).report, name)["state"] == "running"
    (container,) = docker_client.containers.list(
        filters={"label": [f"{lbl.ENVIRONMENT}={name}", f"{lbl.HOST}={host}"]}
    )
    config = container.attrs["HostConfig"]["LogConfig"]
    assert config["Type"] == "syslog"
    assert config["Config"]["tag"] == f"portside/{name}"
    assert config["Config"][SYSLOG] == rsyslog.udp

    forwarded = rsyslog.wait_for("marker-")
    assert all(line.startswith(f"portside/{name}[") for line in forwarded)
    # Dual logging: Docker's local copy still answers docker logs ...
    assert "marker-" in container.logs(tail=20).decode()
    # ... so the agent's shipping carries the same lines to Portside.
    shipper = LogShipper(docker_client, ToControlPlane(client, token), lambda: host)
    shipper.collect()
    shipper.flush()
    response = client.get(f"/v1/environments/{env_id}/logs", headers=read_headers)
    assert response.status_code == 200
    shown = {marker_number(e["line"]) for e in response.get_json()["lines"]}
    sent = {marker_number(line) for line in forwarded}
    assert sent - {None} and sent - {None} <= shown  # every line forwarded so far, in Portside


COMPOSE = """
services:
  web:
    image: {image}
    command: {command}
"""


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cleanup")
def test_compose_services_forward_with_their_own_tag(
    docker_client: docker.DockerClient,
    images: Any,  # noqa: F811 - the fixture
    agent: Any,  # noqa: F811 - the fixture
    uid: str,  # noqa: F811 - the fixture
    rsyslog: Rsyslog,
) -> None:
    host, name = f"host-{uid}", f"stack-{uid}"
    body = env_body(
        name,
        mode="compose",
        image=None,
        compose=COMPOSE.format(image=images("chatty", cmd=CHATTY), command=json.dumps(CHATTY)),
        routed_service="web",
        port=8080,
        deployment_id=1,
        health_check={"path": "/", "timeout": 30},
        kind="preview",
        log_driver={"driver": "syslog", "options": {SYSLOG: rsyslog.udp, "mode": "blocking"}},
    )
    source = FakeSource(desired(host, body))
    assert only(run_once(agent, source).report, name)["state"] == "running"
    forwarded = rsyslog.wait_for(f"portside/{name}/web[")
    assert any("marker-" in line for line in forwarded)
    (web,) = docker_client.containers.list(
        filters={"label": [f"{lbl.ENVIRONMENT}={name}", f"{lbl.COMPOSE_SERVICE}=web"]}
    )
    config = web.attrs["HostConfig"]["LogConfig"]["Config"]
    assert config["mode"] == "blocking"  # the admin's choice over the agent's default
    assert config["labels"].split(",")[-1] == lbl.COMPOSE_SERVICE
    deadline = time.monotonic() + 10
    while "marker-" not in web.logs(tail=20).decode() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "marker-" in web.logs(tail=20).decode()  # dual logging: the local copy stays
