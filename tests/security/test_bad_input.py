"""Hostile or broken input the other tests do not cover: domains that are not host names
or are another service's, pushes of repositories the App is not installed on, ref names
made to look like shell commands, and tokens used outside their scope or for another
host. Each is refused or ignored with a reason, and changes nothing."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import AuditEvent, Deployment, Environment, Host, Service, Variable
from controlplane.services import catalog, hosts, servicerules
from tests.controlplane.test_agent_api import deploy
from tests.controlplane.test_intake_processing import (
    OWNER,
    builds,
    delivery,
    github_app,
    install,
    post,
    process,
    push_payload,
    seeded,
)
from tests.githubserver.server import GitHubServer

__all__ = ["github_app", "seeded"]  # fixtures, imported for pytest to find


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def body(response: TestResponse) -> dict[str, Any]:
    data = response.get_json()
    assert isinstance(data, dict), response.get_data(as_text=True)
    return data


# -- domains ---------------------------------------------------------------------------


@pytest.fixture
def two_services(database: Database) -> dict[str, int]:
    """``hello`` at hello.example.com and ``other`` without a domain, on web-1."""
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        ids = {}
        for name, domain in (("hello", "hello.example.com"), ("other", None)):
            spec = servicerules.ServiceSpec(
                name=name, repository=f"o/{name}", branch="main", host="web-1", domain=domain
            )
            ids[name] = catalog.create_service(session, spec, "test").id
    return ids


def domains(db_session: Session) -> dict[str, Any]:
    """Every service's and environment's domain, and how many audit events there are."""
    db_session.expire_all()
    return {
        "services": {s.name: s.domain for s in db_session.scalars(select(Service))},
        "environments": {e.name: e.domain for e in db_session.scalars(select(Environment))},
        "audit": len(list(db_session.scalars(select(AuditEvent)))),
    }


NOT_HOST_NAMES = [
    "not a host name",
    "localhost",
    "-hello.example.com",
    "hello-.example.com",
    "hello..example.com",
    "hello.example.com.",
    "https://hello.example.com",
    "hello.example.com/admin",
    "hello.example.com:8443",
    "*.example.com",
    "hello_world.example.com",
    "héllo.example.com",
    "a" * 64 + ".example.com",
    "hello.example.com`id`",
    "hello.example.com;rm -rf /",
]


@pytest.mark.parametrize("domain", NOT_HOST_NAMES)
def test_a_domain_that_is_not_a_host_name_is_refused_on_create_and_on_change(
    client: FlaskClient,
    admin_headers: dict[str, str],
    db_session: Session,
    two_services: dict[str, int],
    domain: str,
) -> None:
    before = domains(db_session)
    created = client.post(
        "/v1/services",
        json={"name": "third", "repository": "o/third", "host": "web-1", "domain": domain},
        headers=admin_headers,
    )
    changed = client.patch(
        f"/v1/services/{two_services['hello']}", json={"domain": domain}, headers=admin_headers
    )

    for response in (created, changed):
        assert response.status_code == 422, response.get_data(as_text=True)
        assert body(response)["details"]["domain"] == ["not a valid host name"]
    assert domains(db_session) == before


@pytest.mark.parametrize("taken", ["hello.example.com", "HELLO.Example.com"])
def test_a_domain_of_another_service_is_refused_on_create_and_on_change(
    client: FlaskClient,
    admin_headers: dict[str, str],
    db_session: Session,
    two_services: dict[str, int],
    taken: str,
) -> None:
    before = domains(db_session)
    created = client.post(
        "/v1/services",
        json={"name": "third", "repository": "o/third", "host": "web-1", "domain": taken},
        headers=admin_headers,
    )
    changed = client.patch(
        f"/v1/services/{two_services['other']}", json={"domain": taken}, headers=admin_headers
    )

    for response in (created, changed):
        assert response.status_code == 409, response.get_data(as_text=True)
        assert body(response)["error"] == "conflict"
        assert "domain" in body(response)["message"]
    assert domains(db_session) == before


# -- pushes ----------------------------------------------------------------------------


def test_a_push_of_a_repository_the_app_is_not_installed_on_is_ignored(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,
    github_app: GitHubApp,
) -> None:
    """The installation exists, and a service names the repository, but the repository
    was never added to the installation (GitHub does not list it either, so the roster's
    reconciliation does not add it): nothing may be built from it."""
    sha = seeded.state.commit(f"{OWNER}/later", {"app.py": "print(1)\n"}, branch="main")
    later = seeded.state.repository(f"{OWNER}/later")
    seeded.state.remove_repository(f"{OWNER}/later")
    install(client, database, seeded, github_app)  # Hello-World and plain, not "later"
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        spec = servicerules.ServiceSpec(
            name="later", repository=f"{OWNER}/later", branch="main", host="web-1"
        )
        catalog.create_service(session, spec, "test")
    payload = push_payload(seeded, sha)
    payload["ref"] = "refs/heads/main"
    payload["repository"].update(id=later.id, name="later", full_name=f"{OWNER}/later")

    delivery_id = post(client, "push", payload)
    process(database, delivery_id, github_app)

    row = delivery(db_session, delivery_id)
    assert (row.status, row.outcome) == (
        "ignored",
        f"repository {OWNER}/later is not installed for installation {row.installation_id}",
    )
    assert builds(db_session) == []


@pytest.fixture
def marker() -> Iterator[Path]:
    """A file that exists only if some shell ran a command smuggled into a ref name."""
    path = Path("/tmp") / f"portside-pwned-{secrets.token_hex(6)}"
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("refs/heads/main;touch {marker}", "no service tracks"),
        ("refs/heads/$(touch {marker})", "no service tracks"),
        ("refs/heads/`touch {marker}`", "no service tracks"),
        ("refs/heads/master && touch {marker}", "no service tracks"),
        ("refs/tags/v1;touch {marker}", "no service of"),
        ("refs/tags/$(touch {marker})", "no service of"),
    ],
)
def test_a_ref_name_with_shell_metacharacters_runs_nothing_and_builds_nothing(
    client: FlaskClient,
    database: Database,
    db_session: Session,
    seeded: GitHubServer,
    github_app: GitHubApp,
    service: str,
    marker: Path,
    ref: str,
    reason: str,
) -> None:
    sha = seeded.state.commit(f"{OWNER}/Hello-World", {"x": "1"}, branch="master")
    payload = push_payload(seeded, sha)
    payload["ref"] = ref.format(marker=marker)

    delivery_id = post(client, "push", payload)
    process(database, delivery_id, github_app)

    row = delivery(db_session, delivery_id)
    assert row.status == "ignored" and reason in (row.outcome or "")
    assert builds(db_session) == []
    assert not marker.exists()


@pytest.mark.parametrize("branch", ["main;touch /tmp/x", "$(id)", "`id`", "a && b", "a|b"])
def test_a_service_cannot_track_a_branch_name_made_of_shell_syntax(
    client: FlaskClient,
    admin_headers: dict[str, str],
    db_session: Session,
    two_services: dict[str, int],
    branch: str,
) -> None:
    """So no push to such a branch can ever match a service and be built."""
    created = client.post(
        "/v1/services",
        json={"name": "third", "repository": "o/third", "host": "web-1", "branch": branch},
        headers=admin_headers,
    )
    changed = client.patch(
        f"/v1/services/{two_services['hello']}", json={"branch": branch}, headers=admin_headers
    )

    for response in (created, changed):
        assert response.status_code == 422, response.get_data(as_text=True)
        assert body(response)["details"]["branch"] == ["not a valid branch name"]
    db_session.expire_all()
    assert {s.name: s.branch for s in db_session.scalars(select(Service))} == {
        "hello": "main",
        "other": "main",
    }


@pytest.fixture
def service(
    client: FlaskClient, database: Database, seeded: GitHubServer, github_app: GitHubApp
) -> str:
    install(client, database, seeded, github_app)
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        spec = servicerules.ServiceSpec(
            name="hello", repository=f"{OWNER}/Hello-World", branch="master", host="web-1"
        )
        catalog.create_service(session, spec, "test")
    return "hello"


# -- tokens ----------------------------------------------------------------------------


@pytest.fixture
def two_hosts(database: Database) -> dict[str, str]:
    """web-1 running a pending deployment of ``hello``, and web-2; their agent tokens."""
    with database.session_scope() as session:
        _web1, token1 = hosts.create_host(session, "web-1", "test")
        _web2, token2 = hosts.create_host(session, "web-2", "test")
        spec = servicerules.ServiceSpec(
            name="hello", repository="o/hello", branch="main", host="web-1", port=8080
        )
        catalog.create_service(session, spec, "test")
    deploy(database, "d" * 40)
    return {"web-1": token1, "web-2": token2}


def host_state(db_session: Session) -> dict[str, Any]:
    db_session.expire_all()
    return {
        "hosts": {
            h.name: (h.generation, h.last_seen_at, h.applied_generation, h.observed)
            for h in db_session.scalars(select(Host))
        },
        "deployments": {d.id: (d.status, d.error) for d in db_session.scalars(select(Deployment))},
        "environments": {
            e.name: (e.status, e.address, e.current_deployment_id)
            for e in db_session.scalars(select(Environment))
        },
    }


def failed_report(deployment_id: int) -> dict[str, Any]:
    item = {"name": "hello", "deployment_id": deployment_id, "state": "failed", "error": "x"}
    return {"generation": 99, "agent_version": "evil", "environments": [item]}


@pytest.mark.parametrize(
    ("token", "status"),
    [
        ("", 401),
        ("not-a-token", 401),
        ("ps_000000000000_" + "x" * 43, 401),
        ("ps_only-two-parts", 401),
        ("WORKER", 403),
        ("READ", 403),
        ("ADMIN", 403),
    ],
)
def test_the_agent_api_refuses_tokens_that_are_not_a_hosts(
    client: FlaskClient,
    db_session: Session,
    two_hosts: dict[str, str],
    worker_headers: dict[str, str],
    read_headers: dict[str, str],
    admin_headers: dict[str, str],
    token: str,
    status: int,
) -> None:
    scoped = {"WORKER": worker_headers, "READ": read_headers, "ADMIN": admin_headers}
    headers = scoped[token] if token in scoped else auth(token)
    deployment_id = next(iter(host_state(db_session)["deployments"]))
    before = host_state(db_session)

    fetched = client.get("/v1/agent/desired-state", headers=headers)
    reported = client.post("/v1/agent/status", json=failed_report(deployment_id), headers=headers)

    for response in (fetched, reported):
        assert response.status_code == status, response.get_data(as_text=True)
        assert body(response)["error"] == ("unauthorized" if status == 401 else "forbidden")
        assert "environments" not in body(response)
    assert host_state(db_session) == before


def test_a_host_token_neither_reads_nor_reports_for_another_host(
    client: FlaskClient, db_session: Session, two_hosts: dict[str, str]
) -> None:
    """web-2's agent asks for web-1's state and reports web-1's deployment as failed: it
    is answered with its own (empty) state, and the report changes only web-2's record."""
    deployment_id = next(iter(host_state(db_session)["deployments"]))
    before = host_state(db_session)
    intruder = auth(two_hosts["web-2"])

    fetched = client.get("/v1/agent/desired-state?host=web-1&host_id=1", headers=intruder)
    reported = client.post("/v1/agent/status", json=failed_report(deployment_id), headers=intruder)

    assert fetched.status_code == 200
    assert (body(fetched)["host"], body(fetched)["environments"]) == ("web-2", [])
    assert reported.status_code == 204
    after = host_state(db_session)
    assert after["deployments"] == before["deployments"]
    assert after["environments"] == before["environments"]
    assert after["hosts"]["web-1"] == before["hosts"]["web-1"]


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("PATCH", "/v1/services/{id}", {"domain": "evil.example.com"}),
        ("PUT", "/v1/services/{id}/variables/EVIL", {"value": "x"}),
        ("DELETE", "/v1/services/{id}", None),
        ("POST", "/v1/registries", {"address": "evil.example.com"}),
        ("POST", "/v1/services/{id}/deployments", {"build_id": 1}),
    ],
)
def test_read_and_host_tokens_change_nothing_through_admin_or_worker_endpoints(
    client: FlaskClient,
    db_session: Session,
    two_hosts: dict[str, str],
    read_headers: dict[str, str],
    method: str,
    path: str,
    payload: dict[str, Any] | None,
) -> None:
    service_id = db_session.scalars(select(Service.id)).one()
    before = (
        host_state(db_session),
        {(s.name, s.domain, s.deleted_at) for s in db_session.scalars(select(Service))},
        len(list(db_session.scalars(select(Variable)))),
        len(list(db_session.scalars(select(AuditEvent)))),
    )
    url = path.format(id=service_id)
    for headers in (read_headers, auth(two_hosts["web-1"])):
        response = client.open(url, method=method, json=payload, headers=headers)
        assert response.status_code == 403, response.get_data(as_text=True)
        assert body(response)["error"] == "forbidden"

    db_session.expire_all()
    assert before == (
        host_state(db_session),
        {(s.name, s.domain, s.deleted_at) for s in db_session.scalars(select(Service))},
        len(list(db_session.scalars(select(Variable)))),
        len(list(db_session.scalars(select(AuditEvent)))),
    )
