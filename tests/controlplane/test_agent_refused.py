"""An agent's ``refused`` report: the deployment fails, the environment says why, and what
the agent still runs for it is not reverted."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.models import Deployment, Environment, Host
from tests.controlplane.test_agent_api import deploy, host_token, report

__all__ = ["host_token"]  # the fixture, used by name

REASON = "compose file refused: services.web.cap_add: not allowed"


def test_a_refused_deployment_fails_and_the_environment_says_why(
    client: FlaskClient, host_token: str, database: Database, db_session: Session
) -> None:
    first = deploy(database, "d" * 40)
    assert report(client, host_token, first, state="running", healthy=True) == 204
    second = deploy(database, "e" * 40)
    db_session.expire_all()
    generation = db_session.scalar(select(Host.generation).where(Host.name == "web-1"))

    for _ in range(2):  # repeated every tick: the second report changes nothing more
        assert report(client, host_token, second, state="refused", error=REASON) == 204
    db_session.expire_all()
    refused = db_session.get(Deployment, second)
    assert refused is not None and refused.status == "failed" and refused.error == REASON
    environment = db_session.scalar(select(Environment))
    assert environment is not None
    assert environment.status == "refused" and environment.status_reason == REASON
    # Not reverted: the agent keeps what it ran, the desired state does not move.
    assert environment.current_deployment_id == second
    assert db_session.scalar(select(Host.generation).where(Host.name == "web-1")) == generation
    previous = db_session.get(Deployment, first)
    assert previous is not None and previous.status == "active"


def test_a_refusal_of_an_old_deployment_leaves_the_environment_alone(
    client: FlaskClient, host_token: str, database: Database, db_session: Session
) -> None:
    first = deploy(database, "d" * 40)
    second = deploy(database, "e" * 40)
    assert report(client, host_token, second, state="running", healthy=True) == 204
    assert report(client, host_token, first, state="refused", error=REASON) == 204
    db_session.expire_all()
    environment = db_session.scalar(select(Environment))
    assert environment is not None and environment.status == "running"
    assert environment.status_reason is None
