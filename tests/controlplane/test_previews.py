"""The preview lifecycle's rules, without Docker: tracking, teardown, TTL and limits."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.models import (
    Build,
    Environment,
    Installation,
    Repository,
    Service,
    WebhookDelivery,
    utcnow,
)
from controlplane.services import catalog, hosts, previewcleanup, previews, servicerules
from controlplane.services.outcomes import HandlerContext
from tests.helpers import json_payload

REPO_ID = 4242


@pytest.fixture
def service(database: Database) -> int:
    with database.session_scope() as session:
        session.add(Installation(id=1, account_login="Codertocat"))
        session.add(Repository(id=REPO_ID, installation_id=1, full_name="Codertocat/Hello-World"))
        hosts.create_host(session, "web-1", "test")
        created = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello",
                repository="Codertocat/Hello-World",
                branch="master",
                host="web-1",
                domain="hello.example.com",
            ),
            "test",
        )
        return created.id


def handle(database: Database, action: str, **changes: Any) -> str:
    payload = copy.deepcopy(json_payload("pull_request__opened.payload.json"))
    payload["action"] = action
    payload["repository"]["id"] = REPO_ID
    payload["pull_request"]["head"]["sha"] = changes.pop("sha", "c" * 40)
    payload["pull_request"]["base"]["ref"] = changes.pop("base", "master")
    payload["pull_request"].update(changes)
    with database.session_scope() as session:
        delivery = WebhookDelivery(
            guid=f"{action}-{utcnow().timestamp()}",
            event="pull_request",
            action=action,
            installation_id=1,
            repository_id=REPO_ID,
            repository_full_name="Codertocat/Hello-World",
            body=json.dumps(payload),
        )
        session.add(delivery)
        session.flush()
        outcome = previews.handle_pull_request(
            session, delivery, HandlerContext(None, "previews.test")
        )
        return outcome.reason


def preview(db_session: Session) -> Environment:
    db_session.expire_all()
    env = db_session.scalar(select(Environment).where(Environment.kind == "preview"))
    assert env is not None
    return env


def test_opened_synchronize_closed_twice(
    database: Database, db_session: Session, service: int
) -> None:
    assert "build" in handle(database, "opened")
    env = preview(db_session)
    assert (env.name, env.domain, env.pr_number) == ("hello-pr-2", "pr-2.hello.example.com", 2)
    handle(database, "synchronize", sha="d" * 40)
    assert [b.commit_sha[0] for b in db_session.scalars(select(Build).order_by(Build.id))] == [
        "c",
        "d",
    ]
    assert "torn down" in handle(database, "closed")
    assert preview(db_session).status == "inactive"
    # A second ``closed`` finds it clean and changes nothing.
    assert "targets no tracked branch" in handle(database, "closed")
    assert preview(db_session).closed_reason == "closed"


def test_editing_the_base_away_tears_down_and_back_reopens(
    database: Database, db_session: Session, service: int
) -> None:
    handle(database, "opened")
    assert "base changed" in handle(database, "edited", base="develop")
    assert preview(db_session).status == "inactive"
    handle(database, "edited", base="master")
    assert preview(db_session).status != "inactive"


def test_preview_domain_falls_back_to_the_preview_zone(
    database: Database, db_session: Session, service: int
) -> None:
    with database.session_scope() as session:
        hello = session.get(Service, service)
        assert hello is not None
        hello.domain = None
    handle(database, "opened")
    assert preview(db_session).domain == "hello-pr-2.previews.test"


def test_forks_can_be_switched_off(database: Database, db_session: Session, service: int) -> None:
    with database.session_scope() as session:
        hello = session.get(Service, service)
        assert hello is not None
        hello.fork_previews = False
    payload_head = {"ref": "x", "sha": "e" * 40, "repo": {"full_name": "someone/fork"}}
    assert "targets no tracked branch" in handle(database, "opened", head=payload_head)


def test_idle_and_excess_previews_are_found(
    database: Database, db_session: Session, service: int
) -> None:
    handle(database, "opened")
    with database.session_scope() as session:
        env = session.scalar(select(Environment).where(Environment.kind == "preview"))
        assert env is not None
        env.last_activity_at = utcnow() - dt.timedelta(days=8)
    with database.session_scope() as session:
        assert [(e.name, "idle" in why) for e, why in previewcleanup.stale_previews(session)] == [
            ("hello-pr-2", True)
        ]
        hello = session.get(Service, service)
        assert hello is not None
        hello.max_previews = 0
        hello.preview_ttl_seconds = 30 * 24 * 3600
    with database.session_scope() as session:
        assert ["limit" in why for _e, why in previewcleanup.stale_previews(session)] == [True]


def test_api_tears_down_and_redeploys(
    client: Any,
    database: Database,
    db_session: Session,
    service: int,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
) -> None:
    handle(database, "opened")
    env = preview(db_session)
    listed = client.get(f"/v1/environments?service={service}&kind=preview", headers=read_headers)
    assert [e["name"] for e in listed.json] == ["hello-pr-2"]
    redeployed = client.post(f"/v1/environments/{env.id}/redeploy", headers=admin_headers)
    assert redeployed.status_code == 202 and redeployed.json["commit_sha"] == "c" * 40
    assert len(list(db_session.scalars(select(Build)))) == 2
    production = db_session.scalar(select(Environment).where(Environment.kind == "production"))
    assert production is not None
    refused = client.delete(f"/v1/environments/{production.id}", headers=admin_headers)
    assert refused.status_code == 409
    assert client.delete(f"/v1/environments/{env.id}", headers=read_headers).status_code == 403
    assert client.delete(f"/v1/environments/{env.id}", headers=admin_headers).status_code == 204
    assert preview(db_session).status == "inactive"
    assert preview(db_session).closed_by == "token:test-admin"
