"""``/metrics``: Prometheus text that parses, with counters that move as things happen."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from controlplane.app import create_app
from controlplane.db import Database
from controlplane.services import (
    builds,
    catalog,
    deliveries,
    deployments,
    hosts,
    pushes,
    stepclaims,
)
from controlplane.services.outcomes import HandlerContext
from controlplane.settings import Secret, Settings
from tests.controlplane.test_agent_api import DIGEST, auth, host_token  # noqa: F401
from tests.fixtures.processes import wait_until, worker_environment
from tests.helpers import load_payload, webhook_headers
from tests.support.live import free_port

METRICS_TOKEN = "metrics-token-for-the-tests"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(client: FlaskClient, headers: dict[str, str]) -> Samples:
    """A scrape counted from the database afresh (not this process's cached families)."""
    cache = client.application.extensions["portside.metrics_cache"]
    cache.expire()
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.get_data(as_text=True))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_deliveries_are_counted_by_event_and_outcome(
    client: FlaskClient, database: Database, read_headers: dict[str, str]
) -> None:
    before = scrape(client, read_headers)
    body = load_payload("push__with-new-branch.payload.json")
    headers = webhook_headers("push", body)
    assert client.post("/webhooks/github", data=body, headers=headers).status_code == 202
    assert client.post("/webhooks/github", data=body, headers=headers).status_code == 200
    star = json.dumps({"action": "created"}).encode()
    client.post("/webhooks/github", data=star, headers=webhook_headers("star", star))
    installation = load_payload("installation__created.payload.json")
    response = client.post(
        "/webhooks/github", data=installation, headers=webhook_headers("installation", installation)
    )
    with database.session_scope() as session:  # what the control worker does
        deliveries.process(session, int(response.json["id"]), HandlerContext())
    after = scrape(client, read_headers)

    def moved(event: str, outcome: str) -> float:
        name = "portside_deliveries_total"
        return value(after, name, event=event, outcome=outcome) - value(
            before, name, event=event, outcome=outcome
        )

    assert moved("push", "received") == 1
    assert moved("push", "duplicate") == 1
    assert moved("star", "received") == 1
    assert moved("star", "ignored") == 1
    assert moved("installation", "processed") == 1


def test_polls_reports_builds_and_deployments(
    client: FlaskClient,
    database: Database,
    host_token: str,  # noqa: F811
    worker_headers: dict[str, str],
    read_headers: dict[str, str],
) -> None:
    before = scrape(client, read_headers)
    first = client.get("/v1/agent/desired-state", headers=auth(host_token))
    assert first.status_code == 200
    again = client.get(
        "/v1/agent/desired-state",
        headers={**auth(host_token), "If-None-Match": first.headers["ETag"]},
    )
    assert again.status_code == 304
    with database.session_scope() as session:
        service = catalog.list_services(session)[0]
        build = pushes.start_build(
            session,
            service,
            pushes.production_environment(session, service),
            "b" * 40,
            branch="main",
        )
        assert build is not None
        build_id = build.id
    with database.session_scope() as session:
        stepclaims.claim_step(session, build_id, "clone", 1, "w1")
    with database.session_scope() as session:
        builds.finish_step(session, build_id, "clone", 1, succeeded=True)
        build = builds.get_build(session, build_id)
        build.images = {"app": {"repository": "127.0.0.1:5001/o/hello", "digest": DIGEST}}
        session.flush()
        deployment_id = deployments.record_deployment(session, service.id, build_id, "test").id
    report = {
        "generation": 2,
        "agent_version": "test",
        "environments": [
            {
                "name": "hello",
                "deployment_id": deployment_id,
                "state": "running",
                "healthy": True,
                "address": "127.0.0.1:8080",
                "containers": [
                    {
                        "id": "a1",
                        "name": "hello-app",
                        "image": "o/hello-app@sha256:x",
                        "status": "running",
                        "health": "healthy",
                        "restart_count": 3,
                    },
                    {
                        "id": "b2",
                        "name": "hello-worker",
                        "image": "o/hello-worker@sha256:x",
                        "status": "running",
                        "health": None,
                        "restart_count": 0,
                    },
                ],
            }
        ],
    }
    assert client.post("/v1/agent/status", json=report, headers=auth(host_token)).status_code == 204
    after = scrape(client, read_headers)
    polls = "portside_desired_state_polls_total"
    assert value(after, polls, status="200") - value(before, polls, status="200") == 1
    assert value(after, polls, status="304") - value(before, polls, status="304") == 1
    labels = {"host": "web-1", "environment": "hello", "container": "hello-app"}
    assert value(after, "portside_container_restarts", **labels) == 3
    assert value(after, "portside_container_health", health="healthy", **labels) == 1
    worker = {**labels, "container": "hello-worker"}
    assert value(after, "portside_container_health", health="none", **worker) == 1
    age = value(after, "portside_agent_last_seen_age_seconds", host="web-1")
    assert 0 <= age < 60
    assert ("portside_agent_last_seen_age_seconds", frozenset({("host", "web-2")})) not in after
    assert value(after, "portside_deployments", status="active") == 1
    assert value(after, "portside_builds", status="succeeded") == 1
    assert value(after, "portside_builds", status="failed") == 0
    step = "portside_build_step_duration_seconds"
    assert value(after, f"{step}_count", step="clone") == 1
    assert value(after, f"{step}_bucket", step="clone", le="+Inf") == 1
    wait = "portside_build_queue_wait_seconds"
    assert value(after, f"{wait}_count", step="clone") == 1


@pytest.mark.slow
def test_gunicorn_workers_add_up(settings: Settings, database: Database, tmp_path: Path) -> None:
    """``portside web`` with several workers: every worker's polls appear in one scrape."""
    with database.session_scope() as session:
        _host, token = hosts.create_host(session, "multi-1", "test")
    port = free_port()
    env = worker_environment(settings) | {
        "GUNICORN_WORKERS": "3",
        "GUNICORN_THREADS": "2",
        "PORTSIDE_METRICS_TOKEN": METRICS_TOKEN,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "web.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", "web", "--bind", f"127.0.0.1:{port}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, "portside web to answer", diagnostics=(tmp_path / "web.log").read_text)
        etag = requests.get(f"{url}/v1/agent/desired-state", headers=auth(token), timeout=5)
        for _ in range(12):  # a new connection each time: spread over the workers
            polled = requests.get(
                f"{url}/v1/agent/desired-state",
                headers={
                    **auth(token),
                    "If-None-Match": etag.headers["ETag"],
                    "Connection": "close",
                },
                timeout=5,
            )
            assert polled.status_code == 304
        samples: Samples = {}
        for _ in range(3):  # whichever worker answers the scrape, it counts them all
            scraped = requests.get(f"{url}/metrics", headers=auth(METRICS_TOKEN), timeout=5)
            assert scraped.status_code == 200, scraped.text
            samples = parse(scraped.text)
            assert value(samples, "portside_desired_state_polls_total", status="304") == 12
            assert value(samples, "portside_desired_state_polls_total", status="200") == 1
        assert "portside_builds" in {name for name, _labels in samples}
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)
        log.close()


@pytest.fixture
def metrics_client(settings: Settings, database: Database) -> Iterator[FlaskClient]:
    """A control plane configured with ``PORTSIDE_METRICS_TOKEN``."""
    app = create_app(dataclasses.replace(settings, metrics_token=Secret(METRICS_TOKEN)))
    app.config["TESTING"] = True
    yield app.test_client()
    app.extensions["portside.wake_hub"].close()
    app.extensions["portside.db"].dispose()


def test_scraping_needs_the_metrics_token_or_a_read_token(
    metrics_client: FlaskClient,
    database: Database,
    read_headers: dict[str, str],
    admin_headers: dict[str, str],
    worker_headers: dict[str, str],
) -> None:
    assert metrics_client.get("/metrics").status_code == 401
    wrong = metrics_client.get("/metrics", headers=auth(METRICS_TOKEN + "x"))
    assert (wrong.status_code, wrong.json["error"]) == (401, "unauthorized")
    assert (
        metrics_client.get("/metrics", headers={"Authorization": METRICS_TOKEN}).status_code == 401
    )
    assert metrics_client.get("/metrics", headers=worker_headers).status_code == 403
    for headers in (auth(METRICS_TOKEN), read_headers, admin_headers):
        answered = metrics_client.get("/metrics", headers=headers)
        assert answered.status_code == 200
        assert "portside_builds" in answered.get_data(as_text=True)
    with database.session_scope() as session:  # a host token reads no metrics either
        _host, host_secret = hosts.create_host(session, "scraped-1", "test")
    assert metrics_client.get("/metrics", headers=auth(host_secret)).status_code == 403


def test_without_a_metrics_token_only_api_tokens_scrape(
    client: FlaskClient, read_headers: dict[str, str]
) -> None:
    assert client.get("/metrics", headers=auth(METRICS_TOKEN)).status_code == 401
    assert client.get("/metrics", headers=read_headers).status_code == 200


def test_a_refused_scrape_and_a_repeated_one_cost_no_database_query(
    metrics_client: FlaskClient,
) -> None:
    app = metrics_client.application
    queries: list[str] = []

    def count(*args: object) -> None:
        queries.append(str(args[2]))

    engine = app.extensions["portside.db"].engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        first = metrics_client.get("/metrics", headers=auth(METRICS_TOKEN))
        assert first.status_code == 200 and queries  # counted from the database once
        queries.clear()
        assert metrics_client.get("/metrics").status_code == 401
        again = metrics_client.get("/metrics", headers=auth(METRICS_TOKEN))
        assert again.status_code == 200
        assert queries == []
        families = {f.name for f in text_string_to_metric_families(again.get_data(as_text=True))}
        assert {"portside_builds", "portside_deployments"} <= families
        app.extensions["portside.metrics_cache"].expire()
        assert metrics_client.get("/metrics", headers=auth(METRICS_TOKEN)).status_code == 200
        assert queries  # computed again once expired
    finally:
        event.remove(engine, "before_cursor_execute", count)
