"""Installations whose webhooks were missed (Portside down, a delivery lost) are caught
up from ``GET /app/installations`` by ``portside github sync`` (and the daily task): the
missing one registered with its roster, a suspension followed, an uninstalled one
removed as its ``installation deleted`` event would have."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import Installation, Repository
from controlplane.services import installations
from controlplane.settings import Settings
from tests.controlplane.test_cli import CLOSED_PORT, Result, assert_one_line_failure, run_portside
from tests.controlplane.test_intake_processing import (
    INSTALLATION,
    OWNER,
    github_app,  # noqa: F401 (a fixture)
)
from tests.fixtures.github import GitHubAppKey
from tests.githubserver.server import GitHubServer

GONE = 41  # known to Portside, uninstalled on GitHub while it was down
SUSPENDED = 42  # known to Portside, suspended on GitHub while it was down


def sync(settings: Settings, env: dict[str, str]) -> Result:
    """``portside github sync`` as a real process on the test database."""
    base = {
        "PORTSIDE_DATABASE_URL": settings.database_url,
        "PORTSIDE_DATA_DIR": str(settings.data_dir),
    }
    return run_portside(["github", "sync"], {**base, **env})


def app_env(github_server: GitHubServer, key: GitHubAppKey) -> dict[str, str]:
    return {
        "PORTSIDE_GITHUB_APP_ID": str(key.app_id),
        "PORTSIDE_GITHUB_PRIVATE_KEY": key.private_key_pem,
        "PORTSIDE_GITHUB_API_URL": github_server.url,
    }


def known_installations(db_session: Session) -> None:
    """What Portside knew before it went down: two live installations, one repository each."""
    for installation_id, login in ((GONE, "gone-org"), (SUSPENDED, "paused-org")):
        db_session.add(Installation(id=installation_id, account_login=login, account_type="User"))
        db_session.flush()
        db_session.add(
            Repository(
                id=installation_id * 100, installation_id=installation_id, full_name=f"{login}/app"
            )
        )
    db_session.commit()


def test_an_installation_missed_while_down_appears_after_github_sync(
    settings: Settings,
    db_session: Session,
    github_server: GitHubServer,
    github_app_key: GitHubAppKey,
) -> None:
    known_installations(db_session)
    state = github_server.state
    state.add_installation(INSTALLATION, OWNER, "Organization")
    for name in ("api", "web"):
        state.add_repository(INSTALLATION, f"{OWNER}/{name}")
        state.commit(f"{OWNER}/{name}", {"compose.yaml": "services:\n  web:\n    build: .\n"})
    state.add_installation(SUSPENDED, "paused-org")
    state.suspend_installation(SUSPENDED)

    result = sync(settings, app_env(github_server, github_app_key))

    assert result.code == 0, result
    assert result.stdout_lines == [
        f"installation {GONE}: deleted",
        f"installation {SUSPENDED}: suspended",
        f"installation {INSTALLATION}: added, 2 repositories, 0 removed",
    ], result
    db_session.expire_all()
    added = db_session.get(Installation, INSTALLATION)
    assert added is not None and added.account_login == OWNER
    assert added.account_type == "Organization" and added.deleted_at is None
    live = select(Repository.full_name, Repository.compose_path).where(
        Repository.installation_id == INSTALLATION, Repository.removed_at.is_(None)
    )
    assert sorted(tuple(row) for row in db_session.execute(live)) == [
        (f"{OWNER}/api", "compose.yaml"),
        (f"{OWNER}/web", "compose.yaml"),
    ]
    gone = db_session.get(Installation, GONE)
    assert gone is not None and gone.deleted_at is not None
    assert all(r.removed_at is not None for r in gone.repositories)
    paused = db_session.get(Installation, SUSPENDED)
    assert paused is not None and paused.suspended_at is not None and paused.deleted_at is None

    # Run again: nothing more to catch up; the unsuspended installation is reconciled.
    state.installations[SUSPENDED].suspended_at = None
    again = sync(settings, app_env(github_server, github_app_key))
    assert again.code == 0, again
    assert again.stdout_lines == [
        f"installation {SUSPENDED}: unsuspended, 0 repositories, 1 removed",
        f"installation {INSTALLATION}: 2 repositories, 0 removed",
    ], again


def test_github_sync_without_an_app_or_a_github_exits_1_with_one_line_and_changes_nothing(
    settings: Settings,
    db_session: Session,
    github_server: GitHubServer,
    github_app_key: GitHubAppKey,
) -> None:
    known_installations(db_session)

    assert_one_line_failure(sync(settings, {}), 1, "no GitHub App is configured")
    unreachable = app_env(github_server, github_app_key)
    unreachable["PORTSIDE_GITHUB_API_URL"] = f"http://127.0.0.1:{CLOSED_PORT}"
    assert_one_line_failure(sync(settings, unreachable), 1, "GitHub is unreachable")

    db_session.expire_all()
    rows = db_session.scalars(select(Installation).order_by(Installation.id))
    assert [(i.id, i.deleted_at, i.suspended_at) for i in rows] == [
        (GONE, None, None),
        (SUSPENDED, None, None),
    ]


def test_the_list_of_installations_is_read_across_pages(
    database: Database,
    db_session: Session,
    github_server: GitHubServer,
    github_app: GitHubApp,  # noqa: F811
) -> None:
    state = github_server.state
    for number in range(101):
        state.add_installation(1000 + number, f"account-{number}")
        state.suspend_installation(1000 + number)  # no roster to fetch: the list alone

    results = installations.sync(database, github_app)

    assert results == {1000 + n: "added, suspended" for n in range(101)}
    listing = [path for _, path in state.api_requests if path.startswith("/app/installations")]
    assert len(listing) == 2 and "page=2" in listing[1]
    db_session.expire_all()
    count = db_session.scalars(select(Installation).where(Installation.suspended_at.isnot(None)))
    assert len(list(count)) == 101
