"""What a build worker is told about a fork's build, through the API it uses: untrusted,
the pull request's number, and build arguments without any secret value."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from controlplane.db import Database
from controlplane.models import Environment
from controlplane.services import catalog, hosts, pushes, servicerules


def fork_build(database: Database) -> tuple[int, int]:
    """A queued untrusted build of a fork's PR 12 (branch main); (service id, build id)."""
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="o/hello", branch="main", host="web-1"
            ),
            "test",
        )
        environment = Environment(
            service_id=service.id,
            host_id=service.environments[0].host_id,
            name="hello-pr-12",
            kind="preview",
            branch="main",
            pr_number=12,
            from_fork=True,
        )
        session.add(environment)
        session.flush()
        build = pushes.start_build(session, service, environment, "c" * 40, branch="main")
        assert build is not None
        build.untrusted = True
        session.flush()
        return service.id, build.id


def claim(client: FlaskClient, headers: dict[str, str], build_id: int, step: str) -> Any:
    claimed = client.post(
        f"/v1/builds/{build_id}/steps/{step}/claim",
        json={"attempt": 1, "worker": "fork-1@test"},
        headers=headers,
    )
    assert claimed.status_code == 200, claimed.json
    return claimed.json


def test_a_fork_build_spec_is_untrusted_with_its_pr_and_no_secret_build_argument(
    client: FlaskClient,
    database: Database,
    admin_headers: dict[str, str],
    worker_headers: dict[str, str],
) -> None:
    service_id, build_id = fork_build(database)
    for name, secret in (("NPM_TOKEN", True), ("PUBLIC_URL", False)):
        put = client.put(
            f"/v1/services/{service_id}/variables/{name}",
            json={"value": f"value-of-{name}", "kind": "build", "secret": secret},
            headers=admin_headers,
        )
        assert put.status_code == 200, put.json

    spec = claim(client, worker_headers, build_id, "clone")
    assert (spec["untrusted"], spec["pr_number"], spec["branch"]) == (True, 12, "main")
    assert spec["compose_allow"] == []
    finished = client.post(
        f"/v1/builds/{build_id}/steps/clone/finish",
        json={"attempt": 1, "status": "succeeded"},
        headers=worker_headers,
    )
    assert finished.status_code == 204, finished.json

    spec = claim(client, worker_headers, build_id, "build")
    assert spec["build_args"] == {"PUBLIC_URL": "value-of-PUBLIC_URL"}
