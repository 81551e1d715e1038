"""Names Docker accepts, made from GitHub owners, repositories and git branches."""

from __future__ import annotations

import re

import pytest

from buildworker.names import (
    branch_tag,
    compose_project_name,
    image_repository,
    pull_request_repository,
    short_sha,
)

TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# The distribution spec's name grammar (domain, then path components).
NAME = re.compile(r"[a-z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+")


@pytest.mark.parametrize(
    ("registry", "owner_repo", "service", "expected"),
    [
        ("127.0.0.1:5001", "Codertocat/Hello-World", None, "127.0.0.1:5001/codertocat/hello-world"),
        (
            "127.0.0.1:5001",
            "Codertocat/Hello-World",
            "web",
            "127.0.0.1:5001/codertocat/hello-world-web",
        ),
        ("https://Registry.example.com/Team/", "o/r", None, "registry.example.com/team/o/r"),
        ("reg:5000", "octo-org/my_app.v2", None, "reg:5000/octo-org/my_app.v2"),
    ],
)
def test_image_repository(registry, owner_repo, service, expected):
    assert image_repository(registry, owner_repo, service) == expected


@pytest.mark.parametrize(
    ("owner_repo", "service"),
    [("o/.github", None), ("o/a..b", None), ("o/-x-", None), ("O/R", "Web"), ("o/r", "a__b_")],
)
def test_image_repository_sanitizes_to_the_grammar(owner_repo, service):
    assert NAME.fullmatch(image_repository("127.0.0.1:5001", owner_repo, service))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("o/.github", None), ("o/github", None)),
        (("o/a..b", None), ("o/a-b", None)),
        (("o/r", "Web"), ("o/r", "web")),
    ],
)
def test_image_repository_sanitizing_does_not_collide(a, b):
    assert image_repository("r", *a) != image_repository("r", *b)


def test_image_repository_owner_case_does_not_matter():
    assert image_repository("r", "Codertocat/X") == image_repository("r", "codertocat/x")


@pytest.mark.parametrize("bad", ["norepo", "a/b/c", "/r", "o/"])
def test_image_repository_needs_owner_and_repo(bad):
    with pytest.raises(ValueError):
        image_repository("r", bad)


@pytest.mark.parametrize(
    ("branch", "expected"),
    [("main", "main"), ("v1.2.3", "v1.2.3"), ("Feature_X", "Feature_X"), ("a-b", "a-b")],
)
def test_branch_tag_keeps_valid_names(branch, expected):
    assert branch_tag(branch) == expected


BRANCHES = [
    "feature/x",
    "feature-x",
    "feature_x",
    "feature.x",
    "Feature/X",
    "feature//x",
    "-leading",
    ".hidden",
    "x" * 300,
    "x" * 299 + "y",
    "$(rm -rf /)",
    "a;b|c&d`e`'f'\"g\"",
    "ünïcødé/branch",
    "emoji-🚀",
    "refs/heads/main",
    "a..b",
    "a-b",
]


@pytest.mark.parametrize("branch", BRANCHES)
def test_branch_tag_is_a_valid_tag(branch):
    tag = branch_tag(branch)
    assert TAG.fullmatch(tag), tag
    assert len(tag) <= 128


def test_branch_tags_never_collide():
    tags = [branch_tag(branch) for branch in BRANCHES]
    assert len(set(tags)) == len(BRANCHES)


def test_branch_tag_is_stable_and_readable():
    assert branch_tag("feature/x") == branch_tag("feature/x")
    assert branch_tag("feature/x").startswith("feature-x..")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Web-PR-12", "web-pr-12"), ("my app.v2", "my-app-v2"), ("_x", "x"), ("a_b", "a_b")],
)
def test_compose_project_name(name, expected):
    assert compose_project_name(name) == expected
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", compose_project_name(name))


def test_compose_project_name_refuses_empty():
    with pytest.raises(ValueError):
        compose_project_name("__")


def test_short_sha():
    assert short_sha("A" * 40) == "a" * 12
    with pytest.raises(ValueError):
        short_sha("not-a-sha-at-all")


@pytest.mark.parametrize(
    ("registry", "number", "service", "expected"),
    [
        ("127.0.0.1:5001", 7, None, "127.0.0.1:5001/codertocat/hello-world/pr-7"),
        ("127.0.0.1:5001", 7, "web", "127.0.0.1:5001/codertocat/hello-world/pr-7/web"),
        (
            "https://Registry.example.com/Team/",
            12,
            "api",
            "registry.example.com/team/codertocat/hello-world/pr-12/api",
        ),
    ],
)
def test_pull_request_repository_is_one_level_below_the_repository(
    registry, number, service, expected
):
    name = pull_request_repository(registry, "Codertocat/Hello-World", number, service)
    assert name.startswith(image_repository(registry, "Codertocat/Hello-World") + "/")
    assert NAME.fullmatch(name)
    assert name == expected
    # No trusted name (owner/repo[-service], two components) can ever equal it.
    assert name not in {
        image_repository(registry, "Codertocat/Hello-World", s) for s in (None, service, "pr-7")
    }


def test_pull_request_repository_needs_a_pull_request_number():
    with pytest.raises(ValueError, match="pull request"):
        pull_request_repository("127.0.0.1:5001", "o/r", 0)
