"""The ``portside`` console script, run as a real process with its settings in the environment.

Every failure a person can fix ends in exactly one line on stderr: exit 2 for bad usage or
settings, exit 1 for a dependency that does not answer. Admin commands print the new
secret on the last line of stdout so scripts can capture it with ``tail -n 1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from controlplane.db import Database
from controlplane.devmode import worker_token as _dev_worker_token
from controlplane.models import ApiToken, Host
from controlplane.services import tokens
from controlplane.settings import Settings

PORTSIDE = Path(sys.executable).with_name("portside")
CLOSED_PORT = 1


def clean_environ() -> dict[str, str]:
    """The test process's environment without any PORTSIDE_* variable of its own."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PORTSIDE_")}


class Result:
    def __init__(self, completed: subprocess.CompletedProcess[str]) -> None:
        self.code = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr

    @property
    def stdout_lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


Run = Callable[..., Result]


def run_portside(args: list[str], env: dict[str, str], timeout: float = 60) -> Result:
    completed = subprocess.run(
        [str(PORTSIDE), *args],
        env={**clean_environ(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(completed)


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """Settings for a fresh SQLite file of this test's own."""
    return {
        "PORTSIDE_DATA_DIR": str(tmp_path / "data"),
        "PORTSIDE_DATABASE_URL": f"sqlite:///{tmp_path / 'portside.sqlite3'}",
    }


@pytest.fixture
def portside(sqlite_env: dict[str, str]) -> Run:
    """Run ``portside ARGS`` against the test's SQLite file (``env`` adds or overrides)."""

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return run_portside(list(args), {**sqlite_env, **(env or {})})

    return run


@pytest.fixture
def migrated(portside: Run) -> Run:
    result = portside("db", "upgrade")
    assert result.code == 0, result
    return portside


@pytest.fixture
def sqlite_database(sqlite_env: dict[str, str]) -> Iterator[Database]:
    """A handle on the same SQLite file the commands use, to check what they wrote."""
    database = Database(Settings.from_env(sqlite_env))
    yield database
    database.dispose()


def assert_one_line_failure(result: Result, code: int, *expected: str) -> None:
    assert result.code == code, result
    assert len(result.stderr_lines) == 1, result
    assert "Traceback" not in result.stderr
    line = result.stderr_lines[0]
    for text in expected:
        assert text in line, result


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORTSIDE_AGENT_INTERVAL", "abc"),
        ("PORTSIDE_REDIS_URL", "http://x"),
        ("PORTSIDE_DATABASE_URL", "mysql://x"),
        ("PORTSIDE_SECRET_KEY", "short"),
        ("PORTSIDE_GITHUB_PRIVATE_KEY_PATH", "/nonexistent/portside/app.pem"),
    ],
)
@pytest.mark.parametrize("command", [["tokens", "list"], ["worker"], ["db", "upgrade"]])
def test_a_bad_setting_exits_2_with_one_line_naming_it(
    portside: Run, variable: str, value: str, command: list[str]
) -> None:
    result = portside(*command, env={variable: value})

    assert_one_line_failure(result, 2, variable)
    assert result.stdout == ""


def test_an_unreachable_database_exits_1_with_one_line(portside: Run) -> None:
    url = f"postgresql://postgres@127.0.0.1:{CLOSED_PORT}/x"

    for command in (["tokens", "list"], ["db", "upgrade"], ["hosts", "create", "web-1"]):
        result = portside(*command, env={"PORTSIDE_DATABASE_URL": url})

        assert_one_line_failure(result, 1, "database", f"127.0.0.1:{CLOSED_PORT}")


def test_the_database_password_is_not_printed_when_it_is_unreachable(portside: Run) -> None:
    url = f"postgresql://postgres:hunter2-db-password@127.0.0.1:{CLOSED_PORT}/x"

    result = portside("tokens", "list", env={"PORTSIDE_DATABASE_URL": url})

    assert_one_line_failure(result, 1, "database")
    assert "hunter2-db-password" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [["tokens", "list"], ["worker"], ["web"]])
def test_an_unmigrated_database_exits_1_with_one_line_naming_the_fix(
    portside: Run, command: list[str]
) -> None:
    result = portside(*command)

    assert_one_line_failure(result, 1, "no Portside tables", "run `portside db upgrade`")


def test_a_database_behind_the_code_says_which_revisions(portside: Run) -> None:
    assert portside("db", "upgrade", "0004").code == 0

    result = portside("tokens", "list")

    assert_one_line_failure(result, 1, "revision 0004", "run `portside db upgrade`")
    assert portside("db", "upgrade").code == 0
    assert portside("tokens", "list").code == 0


def test_a_mistyped_sqlite_path_exits_2_and_creates_nothing(portside: Run, tmp_path: Path) -> None:
    typo = tmp_path / "no-such-dir" / "nested" / "portside.sqlite3"

    result = portside("db", "upgrade", env={"PORTSIDE_DATABASE_URL": f"sqlite:///{typo}"})

    assert_one_line_failure(result, 2, "PORTSIDE_DATABASE_URL", str(typo.parent))
    assert not (tmp_path / "no-such-dir").exists()


def test_the_default_data_directory_is_made_on_first_use(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"

    result = run_portside(["db", "upgrade"], {"PORTSIDE_DATA_DIR": str(data_dir)})

    assert result.code == 0, result
    assert (data_dir / "portside.sqlite3").is_file()


def test_a_worker_without_redis_exits_1_with_one_line(migrated: Run) -> None:
    url = f"redis://127.0.0.1:{CLOSED_PORT}/0"

    for command in (["worker"], ["buildworker", "--name", "build-test"]):
        result = migrated(*command, env={"PORTSIDE_REDIS_URL": url})

        assert_one_line_failure(result, 1, "Redis", f"127.0.0.1:{CLOSED_PORT}")


def test_a_build_worker_without_a_docker_engine_exits_1_naming_docker_host(
    migrated: Run, tmp_path: Path
) -> None:
    nowhere = f"unix://{tmp_path / 'no-docker.sock'}"

    result = migrated("buildworker", "--name", "build-test", env={"DOCKER_HOST": nowhere})

    assert_one_line_failure(result, 1, "DOCKER_HOST", nowhere)


def test_db_upgrade_then_an_admin_token_that_authenticates(
    migrated: Run, sqlite_database: Database
) -> None:
    result = migrated("tokens", "create", "--name", "ci", "--scope", "admin")

    assert result.code == 0, result
    secret = result.stdout_lines[-1]
    assert secret.startswith("ps_")
    assert secret not in "\n".join(result.stdout_lines[:-1])
    with sqlite_database.session_scope() as session:
        token = tokens.authenticate(session, secret)
        assert token is not None
        assert (token.name, token.scope) == ("ci", "admin")
        # Only the hash is kept: the plaintext is nowhere in the row.
        assert secret.split("_", 2)[2].encode() not in token.secret_hash
        assert tokens.authenticate(session, secret + "x") is None


def test_hosts_create_prints_the_hosts_agent_token_last(
    migrated: Run, sqlite_database: Database
) -> None:
    result = migrated("hosts", "create", "web-1")

    assert result.code == 0, result
    secret = result.stdout_lines[-1]
    with sqlite_database.session_scope() as session:
        host = session.scalar(select(Host).where(Host.name == "web-1"))
        assert host is not None
        token = tokens.authenticate(session, secret)
        assert token is not None
        assert token.scope == "host"
        assert token.host_id == host.id


def test_hosts_create_untrusted_marks_the_host_for_fork_previews(
    migrated: Run, sqlite_database: Database
) -> None:
    result = migrated("hosts", "create", "sandbox-1", "--untrusted")

    assert result.code == 0, result
    assert "untrusted host sandbox-1" in result.stdout
    listed = json.loads(migrated("hosts", "list", "--json").stdout)
    assert [(h["name"], h["untrusted"]) for h in listed] == [("sandbox-1", "yes")]
    with sqlite_database.session_scope() as session:
        host = session.scalar(select(Host).where(Host.name == "sandbox-1"))
        assert host is not None and host.untrusted


def test_a_duplicate_host_exits_2_with_one_line(migrated: Run, sqlite_database: Database) -> None:
    assert migrated("hosts", "create", "web-1").code == 0

    result = migrated("hosts", "create", "web-1")

    assert_one_line_failure(result, 2, "web-1")
    with sqlite_database.session_scope() as session:
        assert len(session.scalars(select(Host)).all()) == 1
        # The failed attempt left no orphan agent token behind either.
        assert len(session.scalars(select(ApiToken)).all()) == 1


def test_the_agent_without_its_settings_exits_2_with_one_line(portside: Run) -> None:
    # The agent is a package of its own (hostagent); it names what it is missing.
    result = portside("agent")

    assert_one_line_failure(result, 2, "PORTSIDE_URL")


def test_tokens_list_json_parses(migrated: Run) -> None:
    assert migrated("tokens", "create", "--name", "ci", "--scope", "admin").code == 0
    assert migrated("tokens", "create", "--name", "dashboard", "--scope", "read").code == 0
    revoked = json.loads(migrated("tokens", "list", "--json").stdout)[0]["id"]
    assert migrated("tokens", "revoke", str(revoked)).code == 0

    result = migrated("tokens", "list", "--json")

    assert result.code == 0, result
    listed = json.loads(result.stdout)
    expected = [("ci", "admin"), ("dashboard", "read")]
    assert [(row["name"], row["scope"]) for row in listed] == expected
    assert listed[0]["revoked_at"]
    assert not listed[1]["revoked_at"]
    assert all("token" not in row and "secret_hash" not in row for row in listed)


def test_a_worker_token_takes_the_builds_of_its_lane(
    migrated: Run, sqlite_database: Database
) -> None:
    made = migrated(
        "tokens", "create", "--name", "forks", "--scope", "worker", "--builds", "untrusted"
    )
    assert made.code == 0, made
    assert "for untrusted builds" in made.stdout
    assert migrated("tokens", "create", "--name", "main", "--scope", "worker").code == 0
    with sqlite_database.session_scope() as session:
        token = tokens.authenticate(session, made.stdout_lines[-1])
        assert token is not None and token.builds == "untrusted"

    listed = json.loads(migrated("tokens", "list", "--json").stdout)
    assert [(row["name"], row["builds"]) for row in listed] == [
        ("forks", "untrusted"),
        ("main", "trusted"),
    ]
    admin = migrated("tokens", "create", "--name", "ci", "--scope", "admin", "--builds", "all")
    assert_one_line_failure(admin, 2, "worker")
    assert (
        migrated("tokens", "create", "--name", "x", "--scope", "worker", "--builds", "some").code
        == 2
    )


def test_usage_errors_exit_2(portside: Run) -> None:
    result = portside("tokens", "create", "--name", "x", "--scope", "superuser")

    assert result.code == 2, result
    assert "Traceback" not in result.stderr


def test_portside_dev_reuses_its_worker_token_until_it_stops_working(
    db_session: Any, tmp_path: Path
) -> None:
    """Each `make dev` start used to mint another token; now one is kept (0600) and reused."""
    first = _dev_worker_token(db_session, tmp_path)
    db_session.commit()
    again = _dev_worker_token(db_session, tmp_path)

    assert again == first
    assert (tmp_path / "dev-worker.token").stat().st_mode & 0o777 == 0o600
    kept = tokens.authenticate(db_session, first)
    assert kept is not None
    tokens.revoke_token(db_session, kept.id, "test")
    db_session.commit()

    fresh = _dev_worker_token(db_session, tmp_path)

    assert fresh != first
    assert tokens.authenticate(db_session, fresh) is not None
    assert len(tokens.list_tokens(db_session)) == 2
