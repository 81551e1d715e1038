"""Notifications: targets per service through the API, signed webhooks and Slack messages
sent by a real control worker after a deploy, and retries of a receiver that fails."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.wrappers import Request, Response

from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.models import Environment
from controlplane.services import catalog, notifications, previews
from controlplane.settings import Settings
from tasks import control
from tests.controlplane.test_agent_api import auth, deploy, host_token  # noqa: F401
from tests.fixtures.processes import WorkerProcess, wait_until
from tests.support.live import LiveServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request; answers with ``statuses`` in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            self.requests.append(Received(request.path, dict(request.headers), request.get_data()))
            status = self.statuses.pop(0) if self.statuses else 200
        return Response("ok", status=status)(environ, start_response)

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    server = LiveServer(app).start()
    yield app, server.url
    server.stop()


def _service_id(database: Database) -> int:
    with database.session_scope() as session:
        return catalog.list_services(session)[0].id


def _report(deployment_id: int, state: str = "running", **extra: Any) -> dict[str, Any]:
    item = {"name": "hello", "deployment_id": deployment_id, "state": state}
    item |= {"healthy": state == "running", "address": "127.0.0.1:8080", "containers": []}
    return {"generation": 2, "environments": [item | extra]}


def test_targets_api(
    client: FlaskClient,
    database: Database,
    host_token: str,  # noqa: F811
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
) -> None:
    service_id = _service_id(database)
    url = f"/v1/services/{service_id}/notifications"
    hook = {"kind": "webhook", "url": "https://hooks.example.com/portside?key=abc"}
    assert client.post(url, json=hook, headers=read_headers).status_code == 403
    created = client.post(url, json=hook, headers=admin_headers)
    assert created.status_code == 201
    assert created.json["kind"] == "webhook" and created.json["signed"] is True
    assert len(created.json["secret"]) >= 32  # generated, shown once
    slack = {"kind": "slack", "url": "https://hooks.slack.com/services/T0/B0/XYZ"}
    made = client.post(url, json=slack, headers=admin_headers)
    assert made.status_code == 201 and made.json["secret"] is None
    listed = client.get(url, headers=read_headers)
    assert listed.status_code == 200
    assert [t["kind"] for t in listed.json] == ["webhook", "slack"]
    assert "secret" not in listed.json[0]
    assert listed.json[1]["url"] == "https://hooks.slack.com/…"  # the credential is hidden
    bad = client.post(url, json={"kind": "email", "url": "ftp://x"}, headers=admin_headers)
    assert bad.status_code == 422
    assert set(bad.json["details"]["json"]) == {"kind", "url"}
    assert (
        client.post("/v1/services/999/notifications", json=hook, headers=admin_headers).status_code
        == 404
    )
    target_id = created.json["id"]
    assert client.delete(f"{url}/{target_id}", headers=read_headers).status_code == 403
    assert client.delete(f"{url}/{target_id}", headers=admin_headers).status_code == 204
    assert client.delete(f"{url}/{target_id}", headers=admin_headers).status_code == 404
    assert [t["kind"] for t in client.get(url, headers=read_headers).json] == ["slack"]


def test_a_deploy_sends_a_signed_webhook_and_a_slack_message(
    client: FlaskClient,
    database: Database,
    host_token: str,  # noqa: F811
    admin_headers: dict[str, str],
    receiver: tuple[Receiver, str],
    control_worker: WorkerProcess,
) -> None:
    app, base = receiver
    url = f"/v1/services/{_service_id(database)}/notifications"
    hook = client.post(url, json={"kind": "webhook", "url": f"{base}/hook"}, headers=admin_headers)
    secret = hook.json["secret"]
    client.post(url, json={"kind": "slack", "url": f"{base}/slack"}, headers=admin_headers)
    deployment_id = deploy(database, "c" * 40)
    posted = client.post("/v1/agent/status", json=_report(deployment_id), headers=auth(host_token))
    assert posted.status_code == 204

    (delivered,) = wait_until(lambda: app.to("/hook"), "the webhook", timeout=30)
    signature = delivered.headers["X-Portside-Signature-256"]
    assert signature.startswith("sha256=")
    assert notifications.verify(delivered.body, signature, secret)
    assert not notifications.verify(delivered.body, signature, "another-secret")
    document = delivered.json()
    assert document["event"] == "deploy.succeeded"
    assert delivered.headers["X-Portside-Event"] == "deploy.succeeded"
    assert document["deployment"]["id"] == deployment_id
    assert document["build"]["commit_sha"] == "c" * 40
    assert document["environment"]["url"] == "https://hello.example.com"
    assert document["service"]["name"] == "hello"

    (message,) = wait_until(lambda: app.to("/slack"), "the Slack message", timeout=30)
    assert set(message.json()) == {"text"}
    assert "hello" in message.json()["text"] and "ccccccc" in message.json()["text"]


def test_a_failing_receiver_gets_the_message_on_the_third_try(
    client: FlaskClient,
    database: Database,
    host_token: str,  # noqa: F811
    admin_headers: dict[str, str],
    receiver: tuple[Receiver, str],
    control_worker: WorkerProcess,
) -> None:
    app, base = receiver
    app.statuses = [500, 500]
    url = f"/v1/services/{_service_id(database)}/notifications"
    client.post(url, json={"kind": "webhook", "url": f"{base}/flaky"}, headers=admin_headers)
    deployment_id = deploy(database, "d" * 40)
    report = _report(deployment_id, "failed", error="the container exited with 1")
    assert client.post("/v1/agent/status", json=report, headers=auth(host_token)).status_code == 204

    tries = wait_until(lambda: len(app.to("/flaky")) >= 3 and app.to("/flaky"), "3 tries", 60)
    assert len(tries) == 3
    assert {t.json()["event"] for t in tries} == {"deploy.failed"}
    # The same delivery id each time, so a receiver can tell a retry from a new event.
    assert len({t.headers["X-Portside-Delivery"] for t in tries}) == 1
    assert "exited with 1" in tries[-1].json()["deployment"]["error"]


def test_retry_only_the_failed_targets_and_preview_removed(
    database: Database,
    settings: Settings,
    host_token: str,  # noqa: F811
    receiver: tuple[Receiver, str],
) -> None:
    """The sending function itself: failed targets come back for the task to retry."""
    app, base = receiver
    app.statuses = [503]
    box = SecretBox.from_settings(settings)
    service_id = _service_id(database)
    with database.session_scope() as session:
        flaky, _ = notifications.add_target(
            session, box, service_id, kind="webhook", url=f"{base}/a", secret=None, actor="t"
        )
        steady, _ = notifications.add_target(
            session, box, service_id, kind="slack", url=f"{base}/b", secret=None, actor="t"
        )
        flaky_id, steady_id = flaky.id, steady.id
        service = catalog.list_services(session)[0]
        preview = Environment(
            service_id=service.id,
            host_id=service.host_id,
            name="hello-pr-7",
            kind="preview",
            status="running",
            branch="feature",
            pr_number=7,
        )
        session.add(preview)
        session.flush()
        previews.teardown(session, preview, "github:octocat", "pull request closed")
        environment_id = preview.id
    with database.session_scope() as session:
        failed = notifications.send(session, box, "preview_removed", environment_id)
    assert failed == [flaky_id]
    with database.session_scope() as session:
        again = notifications.send(
            session, box, "preview_removed", environment_id, target_ids=failed
        )
    assert again == []
    assert len(app.to("/a")) == 2 and len(app.to("/b")) == 1
    assert app.to("/a")[-1].json()["event"] == "preview.removed"
    assert app.to("/a")[-1].json()["reason"] == "pull request closed"
    assert "hello-pr-7" in app.to("/b")[0].json()["text"]
    assert steady_id != flaky_id
    # Backoff is bounded: 2, 4, 8, ... seconds, never more than five minutes.
    assert [control.notify_countdown(n) for n in range(3)] == [2, 4, 8]
    assert control.notify_countdown(20) == control.NOTIFY_BACKOFF_MAX
