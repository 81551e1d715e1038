"""After login the dashboard returns only to its own pages, never to another origin."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from controlplane.dashboard.login import safe_next
from controlplane.db import Database
from controlplane.services import tokens

OFF_SITE = (
    "//evil.example/",
    "https://evil.example/",
    "javascript:alert(1)",
    "/\\evil.example",
    "/\\/evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    " //evil.example",
    "evil.example",
    "",
    None,
)


@pytest.mark.parametrize("target", OFF_SITE)
def test_targets_that_a_browser_could_read_as_another_origin_are_refused(
    target: str | None,
) -> None:
    assert safe_next(target) is None


@pytest.mark.parametrize("target", ["/", "/hosts", "/builds/7?tab=log", "/services/web#x"])
def test_local_paths_are_kept(target: str) -> None:
    assert safe_next(target) == target


@pytest.mark.parametrize("target", ["/\t/evil.example", "/\\/evil.example", "//evil.example"])
def test_login_with_an_off_site_next_lands_on_the_dashboard(
    client: FlaskClient, database: Database, target: str
) -> None:
    with database.session_scope() as session:
        _row, secret = tokens.create_token(session, "redirect-check", "read")
    response = client.post("/login", data={"token": secret, "next": target})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    again = client.get("/login", query_string={"next": target})
    assert again.status_code == 302 and again.headers["Location"] == "/"
