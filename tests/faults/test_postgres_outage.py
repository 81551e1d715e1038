"""PostgreSQL down while deliveries arrive: refused with 503 (GitHub redelivers those),
and every delivery answered 202 is processed exactly once, into exactly one build."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from controlplane.db import Database
from controlplane.models import (
    Build,
    Deployment,
    Installation,
    Repository,
    Service,
    WebhookDelivery,
)
from controlplane.services import catalog, hosts, servicerules
from tests.fixtures.processes import Workers
from tests.fixtures.servers import PostgresServer
from tests.fixtures.stack import wait_for
from tests.helpers import json_payload, webhook_headers

pytestmark = [pytest.mark.faults, pytest.mark.slow]

INSTALLATION = 4711
REPOSITORY = "Codertocat/Hello-World"
REPOSITORY_ID = 186853002  # as in the payload
PER_PHASE = 3  # deliveries before the outage, during it, and after it


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.create()
        yield server
    finally:
        server.remove()


@pytest.fixture
def database_url(private_postgres: PostgresServer) -> str:
    """The app, the database fixture and the control worker all use the private server."""
    return private_postgres.url()


Delivery = tuple[bytes, dict[str, str]]


def delivery(number: int) -> Delivery:
    """A signed push of its own commit to branch ``b<number>``, tracked by ``svc-<number>``
    (one service per branch, so no push supersedes another whatever the order)."""
    payload: dict[str, Any] = copy.deepcopy(json_payload("push__with-new-branch.payload.json"))
    payload["installation"]["id"] = INSTALLATION
    payload["ref"] = f"refs/heads/b{number}"
    payload["after"] = sha(number)
    payload["head_commit"]["id"] = sha(number)
    body = json.dumps(payload).encode()
    return body, webhook_headers("push", body)


def sha(number: int) -> str:
    return hashlib.sha1(f"commit {number}".encode(), usedforsecurity=False).hexdigest()


def post(client: FlaskClient, sent: Delivery) -> tuple[int, dict[str, Any]]:
    body, headers = sent
    response = client.post("/webhooks/github", data=body, headers=headers)
    return response.status_code, response.json or {}


def test_deliveries_refused_while_postgres_is_down_are_redelivered_and_built_once(
    client: FlaskClient,
    database: Database,
    private_postgres: PostgresServer,
    worker_processes: Workers,
) -> None:
    with database.session_scope() as session:
        session.add(Installation(id=INSTALLATION, account_login="Codertocat"))
        session.flush()
        session.add(
            Repository(id=REPOSITORY_ID, installation_id=INSTALLATION, full_name=REPOSITORY)
        )
        hosts.create_host(session, "web-1", "test")
        for number in range(3 * PER_PHASE):
            catalog.create_service(
                session,
                servicerules.ServiceSpec(
                    name=f"svc-{number}", repository=REPOSITORY, branch=f"b{number}", host="web-1"
                ),
                "test",
            )
    worker_processes.control()

    before = [delivery(n) for n in range(PER_PHASE)]
    for sent in before:
        assert post(client, sent)[0] == 202

    # Stopped at once: the worker may be in the middle of these deliveries.
    private_postgres.stop()
    during = [delivery(n) for n in range(PER_PHASE, 2 * PER_PHASE)]
    for sent in during:
        status, body = post(client, sent)
        assert (status, body.get("error")) == (503, "unavailable"), body

    private_postgres.start()
    # GitHub's "redeliver": the same body, signature and X-GitHub-Delivery.
    for sent in during:
        status, body = post(client, sent)
        assert (status, body.get("status")) == (202, "received"), body
    after = [delivery(n) for n in range(2 * PER_PHASE, 3 * PER_PHASE)]
    for sent in after:
        assert post(client, sent)[0] == 202

    def all_processed() -> bool:
        with database.session_scope() as session:
            statuses = list(session.scalars(select(WebhookDelivery.status)))
        return len(statuses) == 3 * PER_PHASE and set(statuses) == {"processed"}

    wait_for(all_processed, 90, 0.5, "every accepted delivery to be processed")
    expected_guids = sorted(
        headers["X-GitHub-Delivery"] for _body, headers in before + during + after
    )
    with database.session_scope() as session:
        rows = list(session.scalars(select(WebhookDelivery)))
        assert sorted(row.guid for row in rows) == expected_guids
        assert [row.attempts for row in rows] == [1] * len(rows)
        built = session.execute(
            select(Service.name, Build.commit_sha).join(Service, Build.service_id == Service.id)
        ).all()
        assert sorted(built) == sorted((f"svc-{n}", sha(n)) for n in range(3 * PER_PHASE))
        # Nothing builds here (no build worker), so nothing may have been deployed.
        assert session.scalar(select(func.count()).select_from(Deployment)) == 0
