"""The ``portside`` console script against a running control plane, over real HTTP.

The app is served by LiveServer on 127.0.0.1; every command runs as a subprocess with
``PORTSIDE_URL`` and ``PORTSIDE_TOKEN`` in its environment, as a person would run it.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from redis import Redis
from sqlalchemy import select

from buildworker import channel
from controlplane.db import Database
from controlplane.models import Build, Environment, Installation, Repository
from controlplane.services import catalog, hosts, logs, pushes, servicerules
from tests.controlplane.test_cli import (
    CLOSED_PORT,
    PORTSIDE,
    Result,
    assert_one_line_failure,
    clean_environ,
    run_portside,
)
from tests.controlplane.test_previews import REPO_ID, handle
from tests.support.live import LiveServer

SHA = "c" * 40
Cli = Callable[..., Result]


def secret_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


@pytest.fixture
def live(app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    yield server
    server.stop()


@pytest.fixture
def api_env(live: LiveServer, tmp_path: Path) -> dict[str, str]:
    # The data dir keeps the default SQLite path away from the user's own.
    return {"PORTSIDE_URL": live.url, "PORTSIDE_DATA_DIR": str(tmp_path / "data")}


@pytest.fixture
def admin(api_env: dict[str, str], admin_headers: dict[str, str]) -> Cli:
    """``portside ARGS`` with an admin token (``token=`` or ``env=`` to override)."""

    def run(*args: str, token: str | None = None, env: dict[str, str] | None = None) -> Result:
        environ = {**api_env, "PORTSIDE_TOKEN": token or secret_of(admin_headers)}
        return run_portside(list(args), {**environ, **(env or {})})

    return run


@pytest.fixture
def reader(admin: Cli, read_headers: dict[str, str]) -> Cli:
    def run(*args: str) -> Result:
        return admin(*args, token=secret_of(read_headers))

    return run


@pytest.fixture
def service_id(database: Database) -> int:
    with database.session_scope() as session:
        session.add(Installation(id=1, account_login="Codertocat"))
        session.add(Repository(id=REPO_ID, installation_id=1, full_name="Codertocat/Hello-World"))
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
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
        return service.id


def new_build(
    database: Database,
    service_id: int,
    *,
    status: str = "queued",
    log: str | None = None,
    message: str = "Fix the greeting",
) -> int:
    with database.session_scope() as session:
        service = catalog.get_service(session, service_id)
        environment = pushes.production_environment(session, service)
        build = pushes.start_build(
            session,
            service,
            environment,
            SHA,
            branch="master",
            pushed_at=dt.datetime.now(dt.UTC),
            commit_message=message,
            author="octocat",
            trigger_key=f"test:{time.monotonic()}",
        )
        assert build is not None
        build.status = status
        build.log = log
        session.flush()
        return build.id


def app_redis(app: Flask) -> Redis:
    client: Redis = app.extensions["portside.redis"]
    return client


# -- services -------------------------------------------------------------------------------


def test_services_list_is_a_table_and_json_for_scripts(reader: Cli, service_id: int) -> None:
    table = reader("services", "list")

    assert table.code == 0, table
    header, row = table.stdout_lines
    assert header.split() == ["ID", "NAME", "REPOSITORY", "BRANCH", "HOST", "DOMAIN"]
    assert row.split() == [
        str(service_id),
        "hello",
        "Codertocat/Hello-World",
        "master",
        "web-1",
        "hello.example.com",
    ]

    as_json = reader("services", "list", "--json")

    assert as_json.code == 0, as_json
    listed = json.loads(as_json.stdout)
    assert [(s["id"], s["name"], s["host"]) for s in listed] == [(service_id, "hello", "web-1")]


def test_services_create_and_show_go_through_the_api(admin: Cli, service_id: int) -> None:
    created = admin(
        "services", "create", "world", "--repository", "o/world", "--host", "web-1", "--json"
    )

    assert created.code == 0, created
    assert json.loads(created.stdout)["name"] == "world"

    shown = admin("services", "show", "world")

    assert shown.code == 0, shown
    assert "o/world" in shown.stdout
    assert any(line.split()[1:3] == ["world", "production"] for line in shown.stdout_lines[-1:])

    by_id = json.loads(admin("services", "show", str(service_id), "--json").stdout)
    assert by_id["name"] == "hello"
    assert [env["kind"] for env in by_id["environments"]] == ["production"]

    again = admin("services", "create", "world", "--repository", "o/world", "--host", "web-1")

    assert_one_line_failure(again, 2, "world")

    deleted = admin("services", "delete", "world")

    assert deleted.code == 0, deleted
    assert "world" not in [
        s["name"] for s in json.loads(admin("services", "list", "--json").stdout)
    ]
    assert admin("services", "delete", "world").code == 3


def test_more_services_than_the_apis_default_page_are_all_listed(
    admin: Cli, database: Database
) -> None:
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        for number in range(12):
            spec = servicerules.ServiceSpec(
                name=f"svc-{number:02d}", repository="o/r", branch="main", host="web-1"
            )
            catalog.create_service(session, spec, "test")

    result = admin("services", "list", "--json")

    assert result.code == 0, result
    assert len(json.loads(result.stdout)) == 12


# -- variables ------------------------------------------------------------------------------


def test_variables_are_hidden_unless_revealed(admin: Cli, reader: Cli, service_id: int) -> None:
    assert admin("vars", "set", "hello", "DATABASE_PASSWORD", "hunter2-secret").code == 0
    public = admin(
        "vars",
        "set",
        "hello",
        "NODE_ENV",
        "production",
        "--build",
        "--scope",
        "preview",
        "--public",
    )
    assert public.code == 0, public
    assert "build variable NODE_ENV" in public.stdout

    hidden = reader("vars", "list", "hello")

    assert hidden.code == 0, hidden
    assert "hunter2-secret" not in hidden.stdout
    rows = {line.split()[0]: line.split() for line in hidden.stdout_lines[1:]}
    assert rows["DATABASE_PASSWORD"][1:5] == ["runtime", "all", "yes", "***"]
    assert rows["NODE_ENV"][1:5] == ["build", "preview", "no", "***"]
    as_json = json.loads(reader("vars", "list", "hello", "--json").stdout)
    assert {row["name"]: row["value"] for row in as_json} == {
        "DATABASE_PASSWORD": None,
        "NODE_ENV": None,
    }

    revealed = admin("vars", "list", str(service_id), "--reveal")

    assert revealed.code == 0, revealed
    assert "hunter2-secret" in revealed.stdout
    # Revealing needs an admin token: a read token is refused with exit 4.
    assert_one_line_failure(reader("vars", "list", "hello", "--reveal"), 4, "admin")


def test_a_variable_from_stdin_and_a_refused_one(
    api_env: dict[str, str], admin_headers: dict[str, str], admin: Cli, service_id: int
) -> None:
    completed = subprocess.run(
        [str(PORTSIDE), "vars", "set", "hello", "API_KEY", "-"],
        env={**clean_environ(), **api_env, "PORTSIDE_TOKEN": secret_of(admin_headers)},
        input="from-stdin\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    revealed = json.loads(admin("vars", "list", "hello", "--reveal", "--json").stdout)
    assert revealed[0]["value"] == "from-stdin"

    refused = admin("vars", "set", "hello", "not a name!", "x")

    assert_one_line_failure(refused, 2, "name")


# -- builds and logs ------------------------------------------------------------------------


def test_builds_list_table_json_and_filters(
    reader: Cli, database: Database, service_id: int
) -> None:
    failed = new_build(database, service_id, status="failed", message="Break it\n\nbody")
    running = new_build(database, service_id, status="running")

    table = reader("builds", "list")

    assert table.code == 0, table
    assert table.stdout_lines[0].split()[:6] == [
        "ID",
        "SERVICE",
        "BRANCH",
        "COMMIT",
        "STATUS",
        "AUTHOR",
    ]
    assert [line.split()[0] for line in table.stdout_lines[1:]] == [str(running), str(failed)]
    assert "Break it" in table.stdout and "body" not in table.stdout
    assert table.stdout_lines[1].split()[1:5] == ["hello", "master", SHA[:10], "running"]

    only_failed = json.loads(reader("builds", "list", "--status", "failed", "--json").stdout)
    assert [b["id"] for b in only_failed] == [failed]
    of_service = json.loads(reader("builds", "list", "--service", "hello", "--json").stdout)
    assert {b["id"] for b in of_service} == {failed, running}
    assert len(json.loads(reader("builds", "list", "--limit", "1", "--json").stdout)) == 1


def test_logs_of_a_finished_build(
    reader: Cli, app: Flask, database: Database, service_id: int
) -> None:
    stored = new_build(database, service_id, status="succeeded", log="Step 1/2\nStep 2/2")
    # A build whose log is still only in Redis, closed but not copied yet.
    live_only = new_build(database, service_id, status="running")
    channel.append(app_redis(app), live_only, ["cloning", "building"])
    logs.close(app_redis(app), live_only)

    result = reader("logs", str(stored))

    assert result.code == 0, result
    assert result.stdout_lines == ["Step 1/2", "Step 2/2"]
    assert result.stderr == ""

    followed = reader("logs", str(stored), "-f")

    assert followed.code == 0, followed
    assert followed.stdout_lines == ["Step 1/2", "Step 2/2"]
    assert "succeeded" in followed.stderr

    from_redis = reader("logs", str(live_only), "--json")
    assert json.loads(from_redis.stdout)["lines"] == ["cloning", "building"]
    assert reader("logs", str(live_only), "-f").stdout_lines == ["cloning", "building"]


def test_logs_follow_a_build_that_finishes_meanwhile(
    api_env: dict[str, str],
    read_headers: dict[str, str],
    app: Flask,
    database: Database,
    service_id: int,
) -> None:
    build_id = new_build(database, service_id, status="running")
    redis_client = app_redis(app)
    channel.append(redis_client, build_id, ["Cloning into 'hello'..."])
    process = subprocess.Popen(
        [str(PORTSIDE), "logs", str(build_id), "-f", "--quiet-after", "0.5"],
        env={**clean_environ(), **api_env, "PORTSIDE_TOKEN": secret_of(read_headers)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def build_slowly() -> None:
        time.sleep(2.0)  # quiet long enough for a progress line, once the CLI follows
        for number in range(1, 4):
            channel.append(redis_client, build_id, [f"Step {number}/3"])
            time.sleep(0.2)
        with database.session_scope() as session:
            build = session.get(Build, build_id)
            assert build is not None
            build.status = "succeeded"
        logs.close(redis_client, build_id)

    writer = threading.Thread(target=build_slowly)
    try:
        assert process.stdout is not None
        # The first line shows the CLI is following (starting it takes seconds on a busy
        # machine); only then does the quiet spell begin.
        first = process.stdout.readline()
        writer.start()
        rest, stderr = process.communicate(timeout=60)
    finally:
        if writer.is_alive():
            writer.join()
        if process.poll() is None:
            process.kill()

    assert process.returncode == 0, stderr
    stdout = first + rest
    assert stdout.splitlines() == ["Cloning into 'hello'...", "Step 1/3", "Step 2/3", "Step 3/3"]
    progress = [line for line in stderr.splitlines() if line.startswith("... still")]
    assert progress, stderr
    assert progress[0].endswith(" s)")
    assert stderr.splitlines()[-1] == f"portside: build {build_id} succeeded"


# -- environments, redeploy, previews -------------------------------------------------------


def test_environments_previews_redeploy_and_teardown(
    admin: Cli, reader: Cli, database: Database, service_id: int
) -> None:
    handle(database, "opened")  # a pull request opens preview hello-pr-2

    environments = reader("environments", "list")

    assert environments.code == 0, environments
    names = [line.split()[1] for line in environments.stdout_lines[1:]]
    assert names == ["hello", "hello-pr-2"]
    previews = json.loads(reader("previews", "list", "--json").stdout)
    assert [(p["name"], p["pr_number"]) for p in previews] == [("hello-pr-2", 2)]
    table = reader("previews", "list", "--service", "hello")
    assert table.stdout_lines[0].split()[:4] == ["ID", "NAME", "SERVICE", "PR"]
    assert table.stdout_lines[1].split()[1:4] == ["hello-pr-2", "hello", "2"]

    redeployed = admin("redeploy", "hello-pr-2", "--json")

    assert redeployed.code == 0, redeployed
    build = json.loads(redeployed.stdout)
    assert build["commit_sha"] == SHA
    # A read token may look but not act.
    assert_one_line_failure(reader("redeploy", "hello-pr-2"), 4)
    # The production environment was never built: the API refuses, exit 2 with its reason.
    assert_one_line_failure(admin("redeploy", "hello"), 2, "nothing to redeploy")
    # Production goes with its service, not by teardown: refused with the API's message.
    assert_one_line_failure(admin("previews", "teardown", "hello"), 2, "delete the service instead")

    torn = admin("previews", "teardown", "hello-pr-2")

    assert torn.code == 0, torn
    with database.session_scope() as session:
        preview = session.scalar(select(Environment).where(Environment.name == "hello-pr-2"))
        assert preview is not None and preview.status == "inactive"


def test_previews_approve_a_forks_head_with_its_secrets(
    admin: Cli, reader: Cli, database: Database, service_id: int
) -> None:
    with database.session_scope() as session:
        hosts.create_host(session, "sandbox-1", "test", untrusted=True)
    fork = {"ref": "x", "sha": SHA, "repo": {"full_name": "someone/fork"}}
    handle(database, "opened", head=fork)

    unnamed = admin("previews", "approve", "hello-pr-2", "--secrets")
    assert unnamed.code == 2, unnamed
    assert unnamed.stderr.startswith("usage: portside previews approve ")
    assert "the following arguments are required: --sha" in unnamed.stderr
    assert_one_line_failure(reader("previews", "approve", "hello-pr-2", "--sha", SHA), 4)
    assert_one_line_failure(
        admin("previews", "approve", "hello-pr-2", "--sha", "d" * 40), 2, "head is now"
    )
    approved = admin("previews", "approve", "hello-pr-2", "--secrets", "--sha", SHA)

    assert approved.code == 0, approved
    assert approved.stdout.startswith(f"approved {SHA[:10]} of hello-pr-2, with secrets; build ")
    with database.session_scope() as session:
        preview = session.scalar(select(Environment).where(Environment.name == "hello-pr-2"))
        assert preview is not None
        assert (preview.approved_sha, preview.secrets_approved_sha) == (SHA, SHA)
        (build,) = session.scalars(select(Build).where(Build.environment_id == preview.id))
        assert build.untrusted
    again = json.loads(admin("previews", "approve", "hello-pr-2", "--json", "--sha", SHA).stdout)
    assert (again["build_id"], again["approved_sha"]) == (None, SHA)


# -- exit codes -----------------------------------------------------------------------------


def test_not_found_exits_3(reader: Cli, service_id: int) -> None:
    assert_one_line_failure(reader("logs", "999999"), 3, "999999")
    assert_one_line_failure(reader("logs", "999999", "-f"), 3, "999999")
    assert_one_line_failure(reader("services", "show", "nope"), 3, "nope")
    assert_one_line_failure(reader("vars", "list", "424242"), 3)
    assert_one_line_failure(reader("redeploy", "nope"), 3, "nope")


def test_auth_failures_exit_4(admin: Cli, api_env: dict[str, str]) -> None:
    invalid = admin("builds", "list", token="ps_nope_nope")
    assert_one_line_failure(invalid, 4, "invalid")
    # No token at all: the API commands say what to set, services list does too.
    for command in (["builds", "list"], ["services", "list"]):
        missing = run_portside(command, api_env)
        assert_one_line_failure(missing, 4, "PORTSIDE_TOKEN")


def test_usage_errors_exit_2(admin: Cli) -> None:
    result = admin("vars", "set", "hello", "X", "y", "--scope", "staging")

    assert result.code == 2, result
    assert "Traceback" not in result.stderr


def test_an_unreachable_control_plane_exits_1(admin: Cli) -> None:
    result = admin("services", "list", env={"PORTSIDE_URL": f"http://127.0.0.1:{CLOSED_PORT}"})

    assert_one_line_failure(result, 1, f"127.0.0.1:{CLOSED_PORT}", "unreachable")
