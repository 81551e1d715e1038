"""An environment's dashboard page: memory, CPU and restarts from its agent's last report,
the containers, and a log pane following the API's own event stream with the session."""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.models import Environment, Host, ServiceHost, utcnow
from tests.controlplane.test_agent_api import auth, host_token
from tests.controlplane.test_cli_client import live
from tests.controlplane.test_environment_logs import entry, hello, ship
from tests.dashboard.test_dashboard import artifacts_dir, browser, log_in, make_token, sse, viewer
from tests.support.live import LiveServer

__all__ = ["browser", "hello", "host_token", "live", "viewer"]  # fixtures, used by name

MIB = 1024 * 1024


def report(client: FlaskClient, token: str, usage: dict[str, Any] | None) -> None:
    item: dict[str, Any] = {
        "name": "hello",
        "deployment_id": 1,
        "state": "running",
        "healthy": True,
        "address": "127.0.0.1:8080",
        "containers": [
            {
                "id": "c0ffee",
                "name": "hello-1-abc",
                "image": "o/hello@sha256:x",
                "status": "running",
                "health": "healthy",
                "restart_count": 2,
            },
        ],
    }
    if usage is not None:
        item["usage"] = usage
    body = {"generation": 2, "agent_version": "test", "environments": [item]}
    assert client.post("/v1/agent/status", json=body, headers=auth(token)).status_code == 204


def stream_url(page: str) -> str:
    found = re.search(r'data-stream="([^"]+)"', page)
    assert found, "the page has no log pane to follow"
    return html.unescape(found.group(1))


def first_events(client: FlaskClient, url: str, wanted: str, **kwargs: Any) -> list[dict[str, str]]:
    """The stream's events up to the one whose data holds ``wanted`` (the stream itself
    never ends while the environment exists: it is closed here)."""
    response = client.get(url, buffered=False, **kwargs)
    assert response.status_code == 200, response.status_code
    assert response.mimetype == "text/event-stream"
    body = ""
    deadline = time.monotonic() + 20
    try:
        for chunk in response.response:
            body += chunk.decode() if isinstance(chunk, bytes) else chunk
            if wanted in body or time.monotonic() > deadline:
                break
    finally:
        response.close()
    return [event for event in sse(body) if "data" in event]


def test_the_page_shows_usage_containers_and_the_last_lines(
    viewer: FlaskClient, hello: int, host_token: str
) -> None:
    report(viewer, host_token, {"memory_bytes": 150 * MIB, "cpu_cores": 0.25, "restarts": 2})
    ship(viewer, host_token, entry("listening on :8080"), entry("key s3cret-value used"))
    page = viewer.get(f"/environments/{hello}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert re.search(r'data-usage="memory">150\.0 MiB<', text)
    assert re.search(r'data-usage="cpu">0\.25 cores \(25% of one\)<', text)
    assert re.search(r'data-usage="restarts">2<', text)
    assert 'data-container="hello-1-abc"' in text
    assert "listening on :8080" in text and "key *** used" in text
    assert "s3cret-value" not in text
    # The services and hosts pages lead to it.
    assert f'href="/environments/{hello}"' in viewer.get("/").get_data(as_text=True)
    assert f'href="/environments/{hello}"' in viewer.get("/hosts").get_data(as_text=True)


def test_an_environment_on_several_hosts_shows_each_and_their_sum(
    viewer: FlaskClient, database: Database, hello: int, host_token: str
) -> None:
    report(viewer, host_token, {"memory_bytes": 100 * MIB, "cpu_cores": 0.25, "restarts": 2})
    with database.session_scope() as session:
        # web-2 runs production too, and its agent reported (stored as an agent's report is).
        web_2 = session.scalar(select(Host).where(Host.name == "web-2"))
        environment = session.get(Environment, hello)
        assert web_2 is not None and environment is not None
        session.add(ServiceHost(service_id=environment.service_id, host_id=web_2.id))
        web_2.last_seen_at = utcnow()
        usage = {"memory_bytes": 50 * MIB, "cpu_cores": 0.5, "restarts": 1}
        container = {"name": "hello-1-def", "status": "running", "restart_count": 1}
        web_2.observed = {
            "environments": [{"name": "hello", "usage": usage, "containers": [container]}]
        }
    text = viewer.get(f"/environments/{hello}").get_data(as_text=True)
    assert re.search(r'data-usage="memory">150\.0 MiB<', text)
    assert re.search(r'data-usage="cpu">0\.75 cores \(75% of one\)<', text)
    assert re.search(r'data-usage="restarts">3<', text)
    assert re.search(r'data-host="web-1"><td>web-1</td><td>100\.0 MiB</td>', text)
    assert re.search(r'data-host="web-2"><td>web-2</td><td>50\.0 MiB</td>', text)
    assert 'data-container="hello-1-abc"' in text and 'data-container="hello-1-def"' in text


def test_without_a_report_the_page_says_so(viewer: FlaskClient, hello: int) -> None:
    text = viewer.get(f"/environments/{hello}").get_data(as_text=True)
    assert "No usage reported yet" in text
    assert viewer.get("/environments/999999").status_code == 404


def test_the_pane_follows_the_apis_stream_with_the_session(
    client: FlaskClient,
    database: Database,
    hello: int,
    host_token: str,
    read_headers: dict[str, str],
) -> None:
    ship(client, host_token, entry("shown on the page"))
    # Without a session: 401 (an EventSource cannot follow a redirect to a login form).
    anonymous = client.get(f"/environments/{hello}/logs/stream")
    assert anonymous.status_code == 401
    log_in(client, make_token(database, "read", "bob"))
    url = stream_url(client.get(f"/environments/{hello}").get_data(as_text=True))
    (after,) = parse_qs(urlsplit(url).query)["after"]
    ship(client, host_token, entry("printed after the page"), entry("web up", service="web"))

    pane = first_events(client, url, "web up")
    lines = [json.loads(event["data"])["line"] for event in pane]
    assert lines == ["printed after the page", "web up"]  # from after the page's last line
    # The same stream as the API's: the same ids and the same JSON per line.
    api = first_events(
        client,
        f"/v1/environments/{hello}/logs",
        "web up",
        headers={**read_headers, "Accept": "text/event-stream", "Last-Event-ID": after},
    )
    assert api == pane
    # Resuming and filtering as the API does.
    resumed = first_events(
        client, url.split("?")[0], "web up", headers={"Last-Event-ID": pane[0]["id"]}
    )
    assert [json.loads(e["data"])["line"] for e in resumed] == ["web up"]
    only_web = first_events(client, f"{url}&service=web", "web up")
    assert [json.loads(e["data"])["line"] for e in only_web] == ["web up"]
    # Read only: nothing but GET.
    assert client.post(url).status_code == 405


def test_the_pane_shows_new_lines_live_in_chromium(
    client: FlaskClient,
    database: Database,
    hello: int,
    host_token: str,
    live: LiveServer,
    browser: Any,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    report(client, host_token, {"memory_bytes": 64 * MIB, "cpu_cores": 0.5, "restarts": 0})
    ship(client, host_token, entry("before the page"))
    browser.get(f"{live.url}/login")
    browser.find_element(By.NAME, "token").send_keys(make_token(database, "read", "carol"))
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "form.logout"))
    browser.get(f"{live.url}/environments/{hello}")
    memory = browser.find_element(By.CSS_SELECTOR, '[data-usage="memory"]').text
    assert memory == "64.0 MiB"
    assert "before the page" in browser.find_element(By.ID, "log").text
    # A mark on this very page: gone if it reloads, so a line seen while it is there came
    # through the event stream.
    browser.execute_script("window.portsideSamePage = true;")
    WebDriverWait(browser, 20, 0.1).until(
        lambda d: d.find_element(By.ID, "log-state").text == "following live…"
    )
    ship(client, host_token, entry("printed while watched", service="web"))
    WebDriverWait(browser, 20, 0.1).until(
        lambda d: "[web] printed while watched" in d.find_element(By.ID, "log").text
    )
    assert browser.execute_script("return window.portsideSamePage === true;")
    browser.save_screenshot(str(artifacts_dir() / "environment-page.png"))
