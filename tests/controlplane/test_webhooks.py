"""The webhook receiver: signatures, limits, the outbox row and deduplication."""

from __future__ import annotations

import io
import json
import threading
import uuid

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.github.webhooks import signature, verify_signature
from controlplane.models import WebhookDelivery
from tests.helpers import (
    event_of,
    load_payload,
    payload_names,
    webhook_headers,
)

HANDLED = {"installation", "installation_repositories", "push", "pull_request"}


def test_documented_test_vector_verifies() -> None:
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature(b"Hello, World!", "It's a Secret to Everybody") == expected
    assert verify_signature(b"Hello, World!", expected, "It's a Secret to Everybody")
    assert not verify_signature(b"Hello, World?", expected, "It's a Secret to Everybody")


@pytest.mark.parametrize("name", payload_names())
def test_every_real_payload_is_accepted_when_signed(
    client: FlaskClient, db_session: Session, name: str
) -> None:
    body = load_payload(name)
    event = event_of(name)
    headers = webhook_headers(event, body)
    response = client.post("/webhooks/github", data=body, headers=headers)
    if event == "ping":
        assert response.status_code == 200
        return
    assert response.status_code == 202, response.json
    row = db_session.scalar(
        select(WebhookDelivery).where(WebhookDelivery.guid == headers["X-GitHub-Delivery"])
    )
    assert row is not None
    assert row.event == event
    assert row.payload == json.loads(body)
    assert row.status in ({"received", "enqueued"} if event in HANDLED else {"ignored"})


@pytest.mark.parametrize("name", payload_names())
def test_one_changed_byte_is_refused(client: FlaskClient, db_session: Session, name: str) -> None:
    body = load_payload(name)
    headers = webhook_headers(event_of(name), body)
    tampered = body[:-2] + bytes([body[-2] ^ 0x01]) + body[-1:]
    assert client.post("/webhooks/github", data=tampered, headers=headers).status_code == 401
    bad_signature = dict(headers)
    last = headers["X-Hub-Signature-256"][-1]
    bad_signature["X-Hub-Signature-256"] = headers["X-Hub-Signature-256"][:-1] + (
        "0" if last != "0" else "1"
    )
    response = client.post("/webhooks/github", data=body, headers=bad_signature)
    assert response.status_code == 401
    assert response.json == {"error": "unauthorized", "message": "signature verification failed"}
    assert db_session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


def test_missing_sha1_only_or_wrong_secret_signature_is_refused(client: FlaskClient) -> None:
    body = load_payload("push__payload.json")
    headers = webhook_headers("push", body)
    without = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    assert client.post("/webhooks/github", data=body, headers=without).status_code == 401
    sha1_only = {**without, "X-Hub-Signature": "sha1=" + "0" * 40}
    assert client.post("/webhooks/github", data=body, headers=sha1_only).status_code == 401
    other = webhook_headers("push", body, secret="not-the-secret")
    assert client.post("/webhooks/github", data=body, headers=other).status_code == 401


def test_missing_headers_and_non_object_bodies_answer_400(client: FlaskClient) -> None:
    body = load_payload("push__payload.json")
    for header in ("X-GitHub-Delivery", "X-GitHub-Event"):
        headers = {k: v for k, v in webhook_headers("push", body).items() if k != header}
        assert client.post("/webhooks/github", data=body, headers=headers).status_code == 400
    for bad in (b"[1, 2]", b'"text"', b'{"truncated": ', b"[" * 100000 + b"]" * 100000):
        response = client.post("/webhooks/github", data=bad, headers=webhook_headers("push", bad))
        assert response.status_code == 400, bad[:20]


def test_other_methods_and_paths_are_refused_in_the_api_error_shape(client: FlaskClient) -> None:
    """The endpoint is served outside Flask: its errors still look like the API's."""
    wrong_method = client.get("/webhooks/github")
    assert (wrong_method.status_code, wrong_method.json["error"]) == (405, "method_not_allowed")
    body = load_payload("push__payload.json")
    deeper = client.post("/webhooks/github/x", data=body, headers=webhook_headers("push", body))
    assert (deeper.status_code, deeper.json["error"]) == (404, "not_found")


def test_oversized_body_is_refused_from_content_length(client: FlaskClient) -> None:
    class Unreadable(io.RawIOBase):
        def readinto(self, buffer: object) -> int:
            raise AssertionError("the body was read")

    environ = {"CONTENT_LENGTH": str(25 * 1024 * 1024 + 1), "wsgi.input": Unreadable()}
    response = client.post(
        "/webhooks/github", headers=webhook_headers("push", b"{}"), environ_overrides=environ
    )
    assert response.status_code == 413
    assert response.json["error"] == "payload_too_large"


def test_unsigned_body_is_refused_before_it_is_read(client: FlaskClient) -> None:
    class Unreadable(io.RawIOBase):
        def readinto(self, buffer: object) -> int:
            raise AssertionError("the body was read")

    headers = webhook_headers("push", b"{}")
    for signature_header in (None, "sha1=" + "0" * 40):
        sent = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
        if signature_header is not None:
            sent["X-Hub-Signature-256"] = signature_header
        environ = {"CONTENT_LENGTH": str(20 * 1024 * 1024), "wsgi.input": Unreadable()}
        response = client.post("/webhooks/github", headers=sent, environ_overrides=environ)
        assert response.status_code == 401
        assert response.json["error"] == "unauthorized"


def test_redelivery_of_the_same_id_answers_200_and_is_recorded_once(
    client: FlaskClient, db_session: Session
) -> None:
    body = load_payload("push__payload.json")
    headers = webhook_headers("push", body)
    assert client.post("/webhooks/github", data=body, headers=headers).status_code == 202
    second = client.post("/webhooks/github", data=body, headers=headers)
    assert second.status_code == 200
    assert second.json["status"] == "duplicate"
    assert db_session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1


def test_twenty_concurrent_copies_make_one_row(app, db_session: Session) -> None:
    body = load_payload("push__payload.json")
    headers = webhook_headers("push", body, guid=str(uuid.uuid4()))
    statuses: list[int] = []

    def post() -> None:
        statuses.append(
            app.test_client().post("/webhooks/github", data=body, headers=headers).status_code
        )

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 19 + [202]
    assert db_session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1


def test_unhandled_event_is_recorded_as_ignored(client: FlaskClient, db_session: Session) -> None:
    body = json.dumps({"action": "created", "starred_at": None}).encode()
    response = client.post("/webhooks/github", data=body, headers=webhook_headers("star", body))
    assert response.status_code == 202
    row = db_session.scalar(select(WebhookDelivery))
    assert row is not None and row.status == "ignored" and "star" in (row.outcome or "")
