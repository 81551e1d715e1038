"""The dashboard at ``/``: login with a token, each page with real rows, the live log
stream, and one real build watched in headless Chromium."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import select

from buildworker import channel
from controlplane.db import Database
from controlplane.models import (
    ApiToken,
    Build,
    Deployment,
    Environment,
    Host,
    WebhookDelivery,
    utcnow,
)
from controlplane.services import catalog, hosts, logs, pushes, servicerules, tokens
from tests.fixtures.docker import unavailable
from tests.fixtures.stack import Stack, wait_for

SHA_OK = "1" * 40
SHA_FAIL = "2" * 40
SHA_RUN = "3" * 40
SHA_PR = "4" * 40
DIGEST = "sha256:" + "0" * 64
PAGES = ("/", "/builds", "/deliveries", "/hosts")


def make_token(database: Database, scope: str, name: str | None = None) -> str:
    with database.session_scope() as session:
        _row, secret = tokens.create_token(session, name or f"dash-{scope}", scope)
    return secret


def log_in(client: FlaskClient, token: str, next_path: str = "/") -> Any:
    return client.post("/login", data={"token": token, "next": next_path})


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no logout form"
    return found.group(1)


@pytest.fixture
def viewer(client: FlaskClient, database: Database) -> FlaskClient:
    """The test client, logged in with a read token."""
    response = log_in(client, make_token(database, "read", "alice-laptop"))
    assert response.status_code == 302
    return client


@dataclass
class Seeded:
    service_id: int
    succeeded: int
    failed: int
    running: int
    preview_build: int
    delivery_id: int


@pytest.fixture
def seeded(database: Database, redis_url: str) -> Seeded:
    """One service with production and a preview, a succeeded, a failed and a running
    build, a delivery and a host whose agent reported in."""
    now = utcnow()
    with database.session_scope() as session:
        host, _token = hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="octo/hello", branch="main", host="web-1", port=8080
            ),
            "test",
        )
        production = pushes.production_environment(session, service)
        delivery = WebhookDelivery(
            guid="d-1",
            event="push",
            action=None,
            repository_full_name="octo/hello",
            body="{}",
            status="processed",
            outcome="started build for hello",
            attempts=1,
            processed_at=now,
        )
        session.add(delivery)
        session.flush()

        def build(sha: str, env: Environment, message: str, author: str) -> Build:
            made = pushes.start_build(
                session,
                service,
                env,
                sha,
                branch=env.branch,
                commit_message=message,
                author=author,
                delivery_id=delivery.id,
            )
            assert made is not None
            session.flush()
            return made

        ok = build(SHA_OK, production, "Ship the <b>new</b> landing page\n\nlong body", "octocat")
        ok.status, ok.started_at, ok.finished_at = "succeeded", now - dt.timedelta(seconds=75), now
        ok.images = {"app": {"repository": "127.0.0.1:5001/octo/hello", "digest": DIGEST}}
        ok.log = "==> clone (build-1)\n==> build (build-1)\nStep 1/3 : FROM base\npushing"
        for step in ok.steps:
            step.status, step.started_at, step.finished_at = "succeeded", ok.started_at, now
        deployment = Deployment(environment_id=production.id, build_id=ok.id, status="active")
        deployment.activated_at = now
        session.add(deployment)
        session.flush()
        production.current_deployment_id = deployment.id
        production.status = "running"
        production.address = "127.0.0.1:49153"

        failed = build(SHA_FAIL, production, "Break the Dockerfile", "hubot")
        failed.status, failed.started_at, failed.finished_at = "failed", now, now
        failed.failed_step, failed.error = "build", "docker build failed: RUN make exited 2"
        failed.log = "\n".join(
            [
                "==> clone (build-1)",
                *[f"noise line {i}" for i in range(60)],
                "make: *** [all] Error 2",
            ]
        )
        for step in failed.steps:
            if step.name == "clone":
                step.status, step.started_at, step.finished_at = "succeeded", now, now
            elif step.name == "build":
                step.status, step.started_at, step.finished_at = "failed", now, now
                step.error = failed.error
            else:
                step.status = "skipped"

        running = build(SHA_RUN, production, "Work in progress", "octocat")
        running.status, running.started_at = "running", now
        running.steps[0].status, running.steps[0].started_at = "running", now

        preview = Environment(
            service_id=service.id,
            host_id=host.id,
            name="hello-pr-7",
            kind="preview",
            status="building",
            branch="feature",
            pr_number=7,
            pr_author="monalisa",
            domain="pr-7.hello.example.test",
        )
        closed = Environment(
            service_id=service.id,
            host_id=host.id,
            name="hello-pr-3",
            kind="preview",
            status="inactive",
            branch="old",
            pr_number=3,
        )
        session.add_all([preview, closed])
        session.flush()
        preview_build = build(SHA_PR, preview, "Try a feature", "monalisa")

        host.last_seen_at = now
        host.agent_version = "0.1.0"
        host.observed = {
            "generation": 2,
            "environments": [
                {
                    "name": production.name,
                    "state": "running",
                    "containers": [
                        {
                            "name": "portside-hello-1",
                            "image": "127.0.0.1:5001/octo/hello@" + DIGEST,
                            "status": "running",
                            "health": None,
                            "restart_count": 2,
                        }
                    ],
                },
                "garbage from an old agent",
            ],
        }
        ids = Seeded(service.id, ok.id, failed.id, running.id, preview_build.id, delivery.id)
    client = redis.Redis.from_url(redis_url)
    channel.append(client, ids.running, ["==> clone (build-1)", "Cloning into '/work'..."])
    client.close()
    return ids


# ---------------------------------------------------------------------------------------
# Login and logout
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*PAGES, "/builds/1", "/builds/1/log.txt"])
def test_pages_send_a_visitor_without_a_session_to_login(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_the_log_stream_without_a_session_is_401_not_a_redirect(client: FlaskClient) -> None:
    response = client.get("/builds/1/log/stream", headers={"Accept": "text/event-stream"})
    assert response.status_code == 401


def test_login_form_then_a_read_token_opens_the_dashboard(
    client: FlaskClient, database: Database
) -> None:
    form = client.get("/login?next=/hosts")
    assert form.status_code == 200
    assert b'name="token"' in form.data and b'type="password"' in form.data
    secret = make_token(database, "read", "bob")

    response = log_in(client, secret, "/hosts")

    assert response.status_code == 302 and response.headers["Location"] == "/hosts"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    _public_id, plaintext = tokens.split(secret)  # type: ignore[misc]
    assert plaintext not in cookie and secret not in cookie
    page = client.get("/hosts")
    assert page.status_code == 200 and b"bob" in page.data
    assert client.get("/login").status_code == 302  # already logged in


def test_an_admin_token_logs_in_too(client: FlaskClient, database: Database) -> None:
    assert log_in(client, make_token(database, "admin")).status_code == 302
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("scope", ["worker", "host", "bogus"])
def test_machine_tokens_and_nonsense_are_refused(
    client: FlaskClient, database: Database, scope: str
) -> None:
    if scope == "host":
        with database.session_scope() as session:
            secret = hosts.create_host(session, "web-9", "test")[1]
    elif scope == "worker":
        secret = make_token(database, "worker")
    else:
        secret = "ps_nothere_at-all"
    response = log_in(client, secret)
    assert response.status_code == 401
    assert b"not a live read or admin token" in response.data
    assert client.get("/").status_code == 302


def test_logout_needs_the_form_token_and_ends_the_session(viewer: FlaskClient) -> None:
    page = viewer.get("/")
    assert viewer.post("/logout", data={"csrf": "forged"}).status_code == 400
    assert viewer.get("/").status_code == 200

    response = viewer.post("/logout", data={"csrf": csrf_of(page.text)})

    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert viewer.get("/").status_code == 302


def test_revoking_the_token_ends_its_dashboard_session(
    viewer: FlaskClient, database: Database
) -> None:
    assert viewer.get("/").status_code == 200
    with database.session_scope() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.name == "alice-laptop"))
        assert token is not None
        tokens.revoke_token(session, token.id, "test")
    assert viewer.get("/").status_code == 302


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil"])
def test_login_only_returns_to_pages_of_this_site(
    client: FlaskClient, database: Database, target: str
) -> None:
    response = log_in(client, make_token(database, "read"), target)
    assert response.headers["Location"] == "/"


def test_pages_carry_a_strict_content_security_policy(viewer: FlaskClient) -> None:
    response = viewer.get("/")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    css = viewer.get("/dashboard-static/dashboard.css")
    assert css.status_code == 200 and b".badge" in css.data


def test_a_session_key_is_derived_when_no_secret_key_is_set(
    settings: Any, database: Database, tmp_path: Path
) -> None:
    from dataclasses import replace

    from controlplane.app import create_app
    from controlplane.settings import Secret

    bare = replace(settings, secret_key=Secret(""), data_dir=tmp_path / "keyless")
    first, second = create_app(bare), create_app(bare)
    try:
        assert first.secret_key and first.secret_key == second.secret_key
        assert (tmp_path / "keyless" / "dashboard-session.key").stat().st_mode & 0o777 == 0o600
    finally:
        for app in (first, second):
            app.extensions["portside.db"].dispose()


# ---------------------------------------------------------------------------------------
# Pages with data
# ---------------------------------------------------------------------------------------


def test_services_page_shows_production_and_previews(viewer: FlaskClient, seeded: Seeded) -> None:
    html = viewer.get("/").text
    assert "hello" in html and "octo/hello" in html
    production = html.split('data-environment="hello"', 1)[1].split("</tr>", 1)[0]
    assert "badge-running" in production
    assert SHA_OK[:7] in production
    assert "Ship the &lt;b&gt;new&lt;/b&gt; landing page" in production
    assert "http://127.0.0.1:49153" in production
    assert f"/builds/{seeded.running}" in production  # the newest build of production
    preview = html.split('data-environment="hello-pr-7"', 1)[1].split("</tr>", 1)[0]
    assert "PR #7" in preview and "monalisa" in preview and "badge-building" in preview
    assert "https://pr-7.hello.example.test" in preview
    assert "hello-pr-3" not in html and "1 closed preview not shown" in html


def test_builds_page_lists_commit_author_status_and_duration(
    viewer: FlaskClient, seeded: Seeded
) -> None:
    html = viewer.get("/builds").text
    row = html.split(f'data-build="{seeded.succeeded}"', 1)[1].split("</tr>", 1)[0]
    assert SHA_OK[:7] in row and "Ship the &lt;b&gt;new&lt;/b&gt; landing page" in row
    assert "long body" not in row
    assert "octocat" in row and "badge-succeeded" in row and "1m 15s" in row
    assert f'href="/builds/{seeded.succeeded}"' in row
    failed = html.split(f'data-build="{seeded.failed}"', 1)[1].split("</tr>", 1)[0]
    assert "badge-failed" in failed and "at build" in failed and "hubot" in failed

    only_failed = viewer.get("/builds?status=failed").text
    assert f'data-build="{seeded.failed}"' in only_failed
    assert f'data-build="{seeded.succeeded}"' not in only_failed
    assert viewer.get(f"/builds?service={seeded.service_id}&page=2").status_code == 200
    assert viewer.get("/builds?page=nonsense&status=<x>").status_code == 200


def test_a_failed_build_shows_step_error_and_last_lines_first(
    viewer: FlaskClient, seeded: Seeded
) -> None:
    html = viewer.get(f"/builds/{seeded.failed}").text
    failure = html.split('id="failure"', 1)[1].split("</section>", 1)[0]
    assert "<code>build</code>" in failure
    assert "docker build failed: RUN make exited 2" in failure
    assert "make: *** [all] Error 2" in failure and "noise line 59" in failure
    assert "noise line 0\n" not in failure  # only the tail
    assert html.index('id="failure"') < html.index("<h2>Steps</h2>") < html.index('id="log"')
    assert 'data-stream="' not in html and "build-log.js" not in html
    steps = html.split('class="steps"', 1)[1]
    assert 'data-step="push" class="step-skipped"' in steps


def test_a_finished_build_keeps_its_stored_log(viewer: FlaskClient, seeded: Seeded) -> None:
    html = viewer.get(f"/builds/{seeded.succeeded}").text
    log = html.split('id="log"', 1)[1].split("</pre>", 1)[0]
    assert "==&gt; build (build-1)" in log and "pushing" in log
    assert "127.0.0.1:5001/octo/hello@" + DIGEST in html
    text = viewer.get(f"/builds/{seeded.succeeded}/log.txt")
    assert text.mimetype == "text/plain" and text.text.startswith("==> clone (build-1)\n")


def test_a_running_build_renders_its_log_so_far_and_a_stream_after_it(
    viewer: FlaskClient, seeded: Seeded, redis_url: str
) -> None:
    html = viewer.get(f"/builds/{seeded.running}").text
    assert "Cloning into &#39;/work&#39;..." in html
    stream = re.search(r'data-stream="([^"]+)"', html)
    assert stream is not None
    client = redis.Redis.from_url(redis_url)
    last_id = logs.read(client, seeded.running)[-1][0]
    client.close()
    assert stream.group(1) == f"/builds/{seeded.running}/log/stream?after={last_id}"
    assert "build-log.js" in html


def test_a_missing_build_is_a_404_page(viewer: FlaskClient) -> None:
    response = viewer.get("/builds/999999")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "There is no build 999999." in response.text


def test_deliveries_page_shows_outcomes_and_the_builds_they_started(
    viewer: FlaskClient, seeded: Seeded
) -> None:
    html = viewer.get("/deliveries").text
    row = html.split(f'data-delivery="{seeded.delivery_id}"', 1)[1].split("</tr>", 1)[0]
    assert "<code>push</code>" in row and "badge-processed" in row
    assert "started build for hello" in row
    assert f'href="/builds/{seeded.succeeded}"' in row and f'href="/builds/{seeded.failed}"' in row
    assert (
        f'data-delivery="{seeded.delivery_id}"' not in viewer.get("/deliveries?status=failed").text
    )


def test_hosts_page_shows_last_seen_online_and_what_runs(
    viewer: FlaskClient, seeded: Seeded, database: Database
) -> None:
    with database.session_scope() as session:
        idle = Host(name="spare-1", last_seen_at=utcnow() - dt.timedelta(hours=2))
        session.add(idle)
    html = viewer.get("/hosts").text
    web = html.split("<h2>web-1", 1)[1].split("</section>", 1)[0]
    assert "badge-online" in web and "agent 0.1.0" in web and "just now" in web
    production = web.split('data-environment="hello"', 1)[1].split("</tr>", 1)[0]
    assert "portside-hello-1" in production and "2 restarts" in production
    assert SHA_OK[:7] in production
    assert 'data-environment="hello-pr-7"' in web
    spare = html.split("<h2>spare-1", 1)[1].split("</section>", 1)[0]
    assert "badge-offline" in spare and "2h 00m ago" in spare


def test_empty_pages_render(viewer: FlaskClient) -> None:
    for path in PAGES:
        response = viewer.get(path)
        assert response.status_code == 200, path
        assert "<main>" in response.text


# ---------------------------------------------------------------------------------------
# The log stream
# ---------------------------------------------------------------------------------------


def sse(body: str) -> list[dict[str, str]]:
    """Server-sent events as dicts of their fields (comments dropped)."""
    events = []
    for block in body.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if fields:
            events.append(fields)
    return events


def set_status(database: Database, build_id: int, status: str) -> None:
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        build.status = status
        build.finished_at = utcnow()


def test_the_stream_follows_the_live_log_and_ends_with_the_final_status(
    viewer: FlaskClient, seeded: Seeded, redis_url: str, database: Database
) -> None:
    client = redis.Redis.from_url(redis_url)
    channel.append(client, seeded.running, ["==> build (build-1)", "Step 1/2 : FROM base"])
    logs.close(client, seeded.running)
    first_id = logs.read(client, seeded.running)[0][0]
    client.close()
    set_status(database, seeded.running, "succeeded")  # committed once the log closes

    events = sse(viewer.get(f"/builds/{seeded.running}/log/stream").text)

    lines = [json.loads(e["data"]) for e in events if "event" not in e]
    assert lines == [
        "==> clone (build-1)",
        "Cloning into '/work'...",
        "==> build (build-1)",
        "Step 1/2 : FROM base",
    ]
    assert all("id" in e for e in events)
    assert events[-1]["event"] == "end" and json.loads(events[-1]["data"]) == {
        "status": "succeeded"
    }
    resumed = sse(
        viewer.get(f"/builds/{seeded.running}/log/stream", headers={"Last-Event-ID": first_id}).text
    )
    assert json.loads(resumed[0]["data"]) == "Cloning into '/work'..."
    after = sse(viewer.get(f"/builds/{seeded.running}/log/stream?after=nonsense").text)
    assert len(after) == 5  # a bad id starts from the beginning


def test_the_stream_of_a_finished_build_replays_its_stored_log(
    viewer: FlaskClient, seeded: Seeded
) -> None:
    response = viewer.get(f"/builds/{seeded.failed}/log/stream")
    assert response.mimetype == "text/event-stream"
    events = sse(response.text)
    assert json.loads(events[-2]["data"]) == "make: *** [all] Error 2"
    assert json.loads(events[-1]["data"]) == {"status": "failed"}


def test_the_stream_ends_when_a_build_ends_without_closing_its_log(
    viewer: FlaskClient, seeded: Seeded, database: Database
) -> None:
    set_status(database, seeded.preview_build, "cancelled")  # superseded: nobody closes it
    with database.session_scope() as session:
        build = session.get(Build, seeded.preview_build)
        assert build is not None
        build.log = None
    events = sse(viewer.get(f"/builds/{seeded.preview_build}/log/stream").text)
    assert events == [{"event": "end", "data": json.dumps({"status": "cancelled"})}]


# ---------------------------------------------------------------------------------------
# A real build, watched in headless Chromium
# ---------------------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1280,1100",
)


def artifacts_dir() -> Path:
    """Where the browser test leaves its screenshot (``var/`` is ignored by git)."""
    configured = os.environ.get("PORTSIDE_TEST_ARTIFACTS")
    root = Path(configured) if configured else Path(__file__).resolve().parents[2] / "var"
    path = root / "test-artifacts" if not configured else root
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Debian's Chromium driven through chromedriver with a fresh profile."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        unavailable(
            "the browser test needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = ChromeService(executable_path=chromedriver, log_output=str(tmp_path / "driver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.docker
@pytest.mark.slow
def test_the_build_page_shows_a_running_builds_log_live_in_chromium(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None, browser: Any
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.tasks.test_pipeline_e2e import build_of, finished, install, push

    install(stack, base_image)
    stack.start_buildworker("build-dashboard")
    browser.get(f"{stack.url}/login")
    browser.find_element(By.NAME, "token").send_keys(make_token(stack.database, "read", "eve"))
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "form.logout"))

    sha = push(
        stack,
        {
            "Dockerfile": f"FROM {base_image}\nRUN sleep 3\nCOPY index.html /www/index.html\n"
            'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n',
            "index.html": "watched\n",
        },
        1_700_001_000,
    )
    build = wait_for(lambda: build_of(stack, sha), 60, what="the build row")
    browser.get(f"{stack.url}/builds/{build.id}")
    assert browser.find_element(By.ID, "log").get_attribute("data-stream")
    # A mark on this very page: it is gone if the page reloads, so a line seen while it
    # is there came through the event stream.
    browser.execute_script("window.portsideSamePage = true;")

    def log_text(driver: Any) -> str:
        return str(driver.find_element(By.ID, "log").text)

    WebDriverWait(browser, 240, 0.1).until(lambda d: "==> build" in log_text(d))
    seen_live = browser.execute_script("return window.portsideSamePage === true;")
    status_then = build_of(stack, sha).status  # type: ignore[union-attr]
    assert seen_live, "the page reloaded before the line showed up"
    assert status_then in ("queued", "running"), (
        f"the line arrived only after the build {status_then}"
    )
    assert "==> clone" in log_text(browser)

    done = wait_for(lambda: finished(stack, sha), 300, 0.5, "the build to finish")
    assert done.status == "succeeded", done.error
    # The page reloads when the build ends: an element may go stale between two looks.
    WebDriverWait(browser, 60, 0.2, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: (
            d.find_element(By.ID, "build-status").get_attribute("data-status") == "succeeded"
            and not d.execute_script("return window.portsideSamePage === true;")
        )
    )
    steps = {
        row.get_attribute("data-step"): row.get_attribute("class")
        for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-step]")
    }
    assert steps == {
        name: "step-succeeded"
        for name in ("clone", "build", "push", "upload_compose", "record_deployment")
    }
    kept = log_text(browser)
    assert "==> build" in kept and "pushing" in kept
    assert browser.find_element(By.ID, "log").get_attribute("data-stream") is None
    browser.save_screenshot(str(artifacts_dir() / "dashboard-build-page.png"))

    with stack.database.session_scope() as session:
        deployment = session.scalar(select(Deployment).where(Deployment.build_id == done.id))
        assert deployment is not None
    image = done.images["app"]
    registry.delete_image(image["repository"].split("/", 1)[1], image["tag"])
