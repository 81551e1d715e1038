"""A control worker that starts catches up installations whose webhooks were missed
while Portside was down (``GET /app/installations``), without waiting a day for beat."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.models import Installation, Repository
from controlplane.settings import Secret, Settings
from tests.fixtures.github import GitHubAppKey
from tests.fixtures.processes import Workers, wait_until, workers_for
from tests.githubserver.server import GitHubServer

MISSED = 4242
OWNER = "missed-org"


@pytest.fixture
def app_workers(
    settings: Settings,
    database: Database,
    celery_client: Celery,
    github_server: GitHubServer,
    github_app_key: GitHubAppKey,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Workers]:
    """Workers configured with the test GitHub App."""
    configured = dataclasses.replace(
        settings,
        github_app_id=github_app_key.app_id,
        github_private_key=Secret(github_app_key.private_key_pem),
        github_api_url=github_server.url,
    )
    yield from workers_for(configured, celery_client, tmp_path, request)


def test_a_starting_control_worker_registers_an_installation_missed_earlier(
    db_session: Session, github_server: GitHubServer, app_workers: Workers
) -> None:
    state = github_server.state
    state.add_installation(MISSED, OWNER, "Organization")
    state.add_repository(MISSED, f"{OWNER}/app")
    state.commit(f"{OWNER}/app", {"compose.yaml": "services:\n  web:\n    build: .\n"})
    assert db_session.get(Installation, MISSED) is None

    worker = app_workers.control()

    def roster() -> list[str]:
        db_session.expire_all()
        rows = select(Repository.full_name).where(Repository.installation_id == MISSED)
        return list(db_session.scalars(rows))

    assert wait_until(roster, "the missed installation's roster", diagnostics=worker.log) == [
        f"{OWNER}/app"
    ]
    installation = db_session.get(Installation, MISSED)
    assert installation is not None and installation.account_login == OWNER
    assert installation.deleted_at is None
