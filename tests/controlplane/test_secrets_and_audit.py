"""Secrets at rest survive a key rotation; every change is in the audit log."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.errors import PortsideError
from controlplane.models import Service, Variable
from controlplane.services import catalog, hosts, servicerules, variables
from controlplane.services.secrets import SERVICE_SECRETS
from controlplane.settings import Secret, Settings

NEW_KEY = "a-brand-new-secret-key-for-portside"


def _service(database: Database, settings: Settings) -> int:
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="o/hello", branch="main", host="web-1"
            ),
            "test",
        )
        variables.set_variable(
            session,
            SecretBox.from_settings(settings),
            service.id,
            name="DB_PASSWORD",
            value="rotate-me-please",
            actor="test",
        )
        return service.id


def test_rotate_key_re_encrypts_every_secret(database: Database, settings: Settings) -> None:
    service_id = _service(database, settings)
    old_box = SecretBox.from_settings(settings)
    with database.session_scope() as session:
        service = session.get(Service, service_id)
        for column in SERVICE_SECRETS:  # each holds its own name, encrypted with the old key
            setattr(service, column, old_box.encrypt(column))
    env = {
        **os.environ,
        "PORTSIDE_DATABASE_URL": settings.database_url,
        "PORTSIDE_REDIS_URL": settings.redis_url,
        "PORTSIDE_SECRET_KEY": NEW_KEY,
        "PORTSIDE_SECRET_KEY_OLD": settings.secret_key.reveal(),
    }
    result = subprocess.run(
        [sys.executable, "-m", "controlplane.cli", "secrets", "rotate-key"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "1 variables" in result.stdout
    assert "3 service_secrets" in result.stdout
    new_only = SecretBox.from_settings(dataclasses.replace(settings, secret_key=Secret(NEW_KEY)))
    with database.session_scope() as session:
        stored = session.scalar(select(Variable))
        service = session.scalar(select(Service))
        assert stored is not None and service is not None
        rotated = {
            "rotate-me-please": stored.value_encrypted,
            **{column: getattr(service, column) for column in SERVICE_SECRETS},
        }
        for plaintext, ciphertext in rotated.items():
            assert new_only.decrypt(ciphertext) == plaintext
            with pytest.raises(PortsideError):
                SecretBox.from_settings(settings).decrypt(ciphertext)


def test_changes_are_audited_without_their_values(
    client: FlaskClient,
    database: Database,
    settings: Settings,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
) -> None:
    service_id = _service(database, settings)
    put = client.put(
        f"/v1/services/{service_id}/variables/API_KEY",
        json={"value": "never-in-the-audit-log"},
        headers=admin_headers,
    )
    assert put.status_code == 200
    assert client.get("/v1/audit", headers=read_headers).status_code == 403
    events = client.get("/v1/audit", headers=admin_headers)
    assert events.status_code == 200
    actions = [(e["actor"], e["action"]) for e in events.json]
    assert ("token:test-admin", "variable.set") in actions
    assert ("test", "service.create") in actions
    assert "never-in-the-audit-log" not in json.dumps(events.json)
    only = client.get("/v1/audit?action=service.create", headers=admin_headers).json
    assert [e["action"] for e in only] == ["service.create"]


def test_tokens_made_and_revoked_by_the_cli_or_the_api_are_audited(
    client: FlaskClient, database: Database, settings: Settings, admin_headers: dict[str, str]
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PORTSIDE_")},
        "PORTSIDE_DATABASE_URL": settings.database_url,
        "PORTSIDE_REDIS_URL": settings.redis_url,
    }

    def cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "controlplane.cli", "tokens", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    created = cli("create", "--name", "ci-bot", "--scope", "read")
    token_id = int(created.split(" token ", 1)[1].split()[0])
    cli("revoke", str(token_id))
    made = client.post("/v1/tokens", json={"name": "dash", "scope": "read"}, headers=admin_headers)
    assert made.status_code == 201
    assert client.delete(f"/v1/tokens/{made.json['id']}", headers=admin_headers).status_code == 204

    events = client.get("/v1/audit?target_type=token", headers=admin_headers).json
    seen = [(e["actor"], e["action"], e["target_id"]) for e in events]
    assert ("cli", "token.create", str(token_id)) in seen
    assert ("cli", "token.revoke", str(token_id)) in seen
    assert ("token:test-admin", "token.create", str(made.json["id"])) in seen
    assert ("token:test-admin", "token.revoke", str(made.json["id"])) in seen
    assert made.json["token"] not in json.dumps(events)
