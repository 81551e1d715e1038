"""What Portside writes to GitHub is masked like the build logs: a secret variable's
value or a token in a build's error never reaches a commit status or a PR comment."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contracts.masking import MASK, mask
from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import Environment, Installation, RegistryCredential, Repository
from controlplane.services import catalog, feedback, hosts, pushes, servicerules, variables
from controlplane.settings import Settings
from tests.fixtures.github import GitHubAppKey
from tests.githubserver.server import GitHubServer, IssueComment

REPOSITORY = "Codertocat/Hello-World"
BUILD_SECRET = "npm-token-4f9a1c77e2"
RUNTIME_SECRET = "postgres://app:Sup3rS3cret@db/app"
REGISTRY_PASSWORD = "registry-pass-31337"
INSTALLATION_TOKEN = "ghs_" + "A1b2C3d4" * 5


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("ARG TOKEN=abcdef", ["abcdef"], f"ARG TOKEN={MASK}"),
        ("key abc", ["abc"], "key abc"),  # too short to be a secret
        ("both longsecret and long", ["long", "longsecret"], f"both {MASK} and {MASK}"),
        (f"fatal: {INSTALLATION_TOKEN}", [], f"fatal: {MASK}"),
        ("https://x-access-token:s3cr3t@github.com/o/r", [], f"https://{MASK}@github.com/o/r"),
        ("token ps_abc123_" + "Z" * 30, [], f"token {MASK}"),
        ("github_pat_" + "x" * 30, [], MASK),
        ("no secret here: https://github.com/o/r", [], "no secret here: https://github.com/o/r"),
    ],
)
def test_mask(text: str, secrets: list[str], expected: str) -> None:
    assert mask(text, secrets) == expected


@pytest.fixture
def github(github_server: GitHubServer, github_app_key: GitHubAppKey) -> GitHubApp:
    state = github_server.state
    state.add_installation(1, "Codertocat")
    state.add_repository(1, REPOSITORY, "main")
    return GitHubApp(github_app_key.app_id, github_app_key.private_key_pem, github_server.url)


@pytest.fixture
def seeded(
    database: Database, settings: Settings, github: GitHubApp, github_server: GitHubServer
) -> tuple[int, int]:
    """A service with secrets of every kind and a build that failed quoting them."""
    head = github_server.state.commit(REPOSITORY, {"index.html": "hi\n"})
    box = SecretBox.from_settings(settings)
    with database.session_scope() as session:
        session.add(Installation(id=1, account_login="Codertocat"))
        session.add(Repository(id=4242, installation_id=1, full_name=REPOSITORY))
        session.add(
            RegistryCredential(
                address="registry.example.test",
                username="push",
                password_encrypted=box.encrypt(REGISTRY_PASSWORD),
            )
        )
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository=REPOSITORY, branch="main", host="web-1"
            ),
            "test",
        )
        variables.set_variable(
            session,
            box,
            service.id,
            name="NPM_TOKEN",
            value=BUILD_SECRET,
            kind="build",
            actor="test",
        )
        variables.set_variable(
            session, box, service.id, name="DATABASE_URL", value=RUNTIME_SECRET, actor="test"
        )
        environment = pushes.production_environment(session, service)
        build = pushes.start_build(session, service, environment, head, branch="main")
        assert build is not None
        build.status = "failed"
        build.failed_step = "build"
        build.error = (
            f"npm ERR! 401 for token {BUILD_SECRET}; could not reach {RUNTIME_SECRET}; "
            f"push as push:{REGISTRY_PASSWORD}; git said {INSTALLATION_TOKEN}"
        )
        return service.id, build.id


def leaked(text: str | None) -> list[str]:
    secrets = (BUILD_SECRET, RUNTIME_SECRET, "Sup3rS3cret", REGISTRY_PASSWORD, INSTALLATION_TOKEN)
    return [secret for secret in secrets if secret in (text or "")]


def test_a_failed_builds_commit_status_names_no_secret(
    database: Database,
    settings: Settings,
    seeded: tuple[int, int],
    github_server: GitHubServer,
    github: GitHubApp,
) -> None:
    _service_id, build_id = seeded
    state = github_server.state
    with database.session_scope() as session:
        feedback.send(session, github, settings, "build_failed", build_id)

    (status,) = state.statuses
    assert status.state == "failure"
    assert status.description is not None and status.description.startswith("build failed:")
    assert MASK in status.description
    assert leaked(status.description) == []


def test_a_removed_previews_comment_names_no_secret(
    database: Database,
    settings: Settings,
    seeded: tuple[int, int],
    github_server: GitHubServer,
    github: GitHubApp,
) -> None:
    service_id, _build_id = seeded
    state = github_server.state
    head = state.commit(REPOSITORY, {"index.html": "hi\n"}, branch="feature")
    state.add_pull_request(REPOSITORY, 5, "feature", base_ref="main")
    now = datetime.now(UTC)
    comment = IssueComment(state.next_id(), REPOSITORY, 5, "Preview is ready", now, now)
    state.comments.append(comment)
    with database.session_scope() as session:
        service = catalog.get_service(session, service_id)
        environment = Environment(
            service_id=service_id,
            host_id=service.host_id,
            name="hello-pr-5",
            kind="preview",
            branch="feature",
            head_sha=head,
            pr_number=5,
            status="inactive",
            closed_reason=f"closed: build secret {BUILD_SECRET} was wrong",
            github_comment_id=comment.id,
        )
        session.add(environment)
        session.flush()
        environment_id = environment.id

    with database.session_scope() as session:
        feedback.send(session, github, settings, "preview_removed", environment_id)

    (edited,) = state.comments
    assert "was removed" in edited.body and MASK in edited.body
    assert leaked(edited.body) == []
