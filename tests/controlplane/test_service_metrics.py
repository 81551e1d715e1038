"""``/metrics`` per service: deployments by status, build and deploy durations as
histograms, labelled by service with a bounded number of series."""

from __future__ import annotations

import datetime as dt

import pytest
from flask.testing import FlaskClient

from controlplane.db import Database
from controlplane.models import Deployment
from controlplane.services import catalog, pushes, servicerules, telemetry
from controlplane.services.deployments import record_deployment
from tests.controlplane.test_agent_api import DIGEST, auth, host_token
from tests.controlplane.test_metrics import scrape, value

__all__ = ["host_token"]  # a fixture, used by name

START = dt.datetime(2026, 1, 1, 12, 0, 0)


def built_and_deployed(database: Database, service_name: str, sha: str, seconds: float) -> int:
    """A build of ``service_name`` that ran ``seconds`` and was recorded; its deployment id."""
    with database.session_scope() as session:
        service = next(s for s in catalog.list_services(session) if s.name == service_name)
        build = pushes.start_build(
            session, service, pushes.production_environment(session, service), sha, branch="main"
        )
        assert build is not None
        build.images = {"app": {"repository": "127.0.0.1:5001/o/hello", "digest": DIGEST}}
        build.status = "succeeded"
        build.started_at = START
        build.finished_at = START + dt.timedelta(seconds=seconds)
        session.flush()
        return record_deployment(session, service.id, build.id, "test").id


def report_running(client: FlaskClient, token: str, name: str, deployment_id: int) -> None:
    report = {
        "generation": 2,
        "agent_version": "test",
        "environments": [
            {
                "name": name,
                "deployment_id": deployment_id,
                "state": "running",
                "healthy": True,
                "address": "127.0.0.1:8080",
                "containers": [],
            }
        ],
    }
    assert client.post("/v1/agent/status", json=report, headers=auth(token)).status_code == 204


def test_deployments_and_durations_per_service(
    client: FlaskClient, database: Database, host_token: str, read_headers: dict[str, str]
) -> None:
    first = built_and_deployed(database, "hello", "a" * 40, 45)
    report_running(client, host_token, "hello", first)
    with database.session_scope() as session:
        deployment = session.get(Deployment, first)
        assert deployment is not None and deployment.activated_at is not None
        # Recorded 20 s before its agent reported it switched.
        deployment.created_at = deployment.activated_at - dt.timedelta(seconds=20)
    built_and_deployed(database, "hello", "b" * 40, 400)  # recorded, not yet running

    samples = scrape(client, read_headers)
    assert value(samples, "portside_service_deployments", service="hello", status="active") == 1
    assert value(samples, "portside_service_deployments", service="hello", status="pending") == 1

    build = "portside_build_duration_seconds"
    assert value(samples, f"{build}_count", service="hello") == 2
    assert value(samples, f"{build}_sum", service="hello") == 445
    assert value(samples, f"{build}_bucket", service="hello", le="30.0") == 0
    assert value(samples, f"{build}_bucket", service="hello", le="60.0") == 1
    assert value(samples, f"{build}_bucket", service="hello", le="600.0") == 2
    assert value(samples, f"{build}_bucket", service="hello", le="+Inf") == 2

    deploy = "portside_deploy_duration_seconds"
    assert value(samples, f"{deploy}_count", service="hello") == 1  # the pending one waits
    assert value(samples, f"{deploy}_bucket", service="hello", le="15.0") == 0
    assert value(samples, f"{deploy}_bucket", service="hello", le="30.0") == 1
    assert value(samples, f"{deploy}_sum", service="hello") == pytest.approx(20.0)


def test_services_past_the_cap_share_one_label(
    client: FlaskClient,
    database: Database,
    host_token: str,
    read_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with database.session_scope() as session:
        catalog.create_service(
            session,
            servicerules.ServiceSpec(name="shop", repository="o/shop", branch="main", host="web-1"),
            "test",
        )
    built_and_deployed(database, "hello", "a" * 40, 10)
    built_and_deployed(database, "shop", "c" * 40, 10)
    monkeypatch.setattr(telemetry, "MAX_SERVICE_LABELS", 1)
    samples = scrape(client, read_headers)
    name = "portside_build_duration_seconds_count"
    assert value(samples, name, service="hello") == 1  # the older service keeps its name
    assert value(samples, name, service="shop") == 0
    assert value(samples, name, service=telemetry.OTHER_SERVICE) == 1
    services_seen = {
        dict(labels)["service"]
        for (sample, labels) in samples
        if sample == "portside_service_deployments"
    }
    assert services_seen == {"hello", telemetry.OTHER_SERVICE}
