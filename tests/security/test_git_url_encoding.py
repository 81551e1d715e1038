"""A git URL's host or user may not start with '-' (ssh would read it as an option), in
any spelling: git percent-decodes ``ssh://`` URLs before it runs ssh, so ``%2D`` is a
'-' too. git refuses such a host itself today; Portside's own rule must not depend on it."""

from __future__ import annotations

import pytest

from contracts.gitremote import GitUrlRefused, check_git_url


@pytest.mark.parametrize(
    "url",
    [
        "ssh://%2DoProxyCommand=touch%20%2Ftmp%2Fpwned/repo",
        "ssh://%2doProxyCommand=x/repo",
        "ssh://%2Doption@example.com/repo",
        "https://%2Dexample.com/repo.git",
    ],
)
def test_an_encoded_dash_is_refused_as_a_plain_one(url: str) -> None:
    with pytest.raises(GitUrlRefused, match="must not start with '-'"):
        check_git_url(url, allow_local=False)


def test_encoded_characters_elsewhere_are_still_accepted() -> None:
    assert check_git_url("ssh://git@example.com/team/my%20repo.git", allow_local=False) == "ssh"
    assert check_git_url("https://example.com/a%2Db.git", allow_local=False) == "https"
