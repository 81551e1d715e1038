"""The read API of intake: deliveries, redelivery, installations; 503 when the DB is down."""

from __future__ import annotations

import dataclasses
import json

from flask.testing import FlaskClient

from controlplane.app import create_app
from controlplane.settings import Settings
from tests.helpers import json_payload, load_payload, webhook_headers


def _post(client: FlaskClient, event: str, body: bytes) -> int:
    response = client.post("/webhooks/github", data=body, headers=webhook_headers(event, body))
    assert response.status_code == 202
    return int(response.json["id"])


def test_deliveries_are_listed_filtered_and_shown(
    client: FlaskClient, read_headers: dict[str, str]
) -> None:
    push_id = _post(client, "push", load_payload("push__with-new-branch.payload.json"))
    star = json.dumps({"action": "created"}).encode()
    star_id = _post(client, "star", star)
    listed = client.get("/v1/deliveries", headers=read_headers)
    assert listed.status_code == 200
    assert [d["id"] for d in listed.json] == [star_id, push_id]
    assert json.loads(listed.headers["X-Pagination"])["total"] == 2
    only_push = client.get("/v1/deliveries?event=push", headers=read_headers).json
    assert [d["id"] for d in only_push] == [push_id]
    ignored = client.get("/v1/deliveries?status=ignored", headers=read_headers).json
    assert [d["id"] for d in ignored] == [star_id]
    bad = client.get("/v1/deliveries?status=bogus", headers=read_headers)
    assert bad.status_code == 422 and "status" in json.dumps(bad.json["details"])
    detail = client.get(f"/v1/deliveries/{push_id}", headers=read_headers).json
    assert detail["payload"]["ref"] == "refs/heads/master"
    assert client.get("/v1/deliveries/999999", headers=read_headers).status_code == 404


def test_redeliver_needs_admin_and_requeues(
    client: FlaskClient, read_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    star_id = _post(client, "star", b'{"action": "created"}')
    url = f"/v1/deliveries/{star_id}/redeliver"
    assert client.post(url, headers=read_headers).status_code == 403
    response = client.post(url, headers=admin_headers)
    assert response.status_code == 202
    assert response.json["status"] == "received"
    audit = client.get("/v1/deliveries", headers=admin_headers).json
    assert audit[0]["status"] == "received"


def test_installations_api_lists_the_roster_recorded_from_events(
    client: FlaskClient, read_headers: dict[str, str]
) -> None:
    payload = json_payload("installation__created.payload.json")
    delivery_id = _post(client, "installation", json.dumps(payload).encode())
    # No worker here: the roster is empty until the delivery is processed.
    assert client.get("/v1/installations", headers=read_headers).json == []
    assert (
        client.get(
            f"/v1/installations/{payload['installation']['id']}/repositories", headers=read_headers
        ).status_code
        == 404
    )
    assert delivery_id


def test_database_down_answers_503_so_github_knows(settings: Settings) -> None:
    down = dataclasses.replace(
        settings, database_url="postgresql+psycopg2://postgres@127.0.0.1:1/x"
    )
    client = create_app(down).test_client()
    body = load_payload("push__with-new-branch.payload.json")
    response = client.post("/webhooks/github", data=body, headers=webhook_headers("push", body))
    assert response.status_code == 503
    assert response.json["error"] == "unavailable"
