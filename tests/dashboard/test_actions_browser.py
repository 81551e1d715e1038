"""Working from the dashboard in a real browser (Debian's headless Chromium): an admin
creates a service from the installation's roster, deploys it, deploys a second commit and
rolls back to the first — the agent serving each in turn — and a form post without the
session's CSRF token is refused."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from sqlalchemy import select

from controlplane.models import Environment, Service
from tests.dashboard.test_dashboard import browser, make_token
from tests.fixtures.stack import Stack, wait_for
from tests.helpers import json_payload
from tests.tasks.test_pipeline_e2e import (
    INSTALLATION,
    REPOSITORY,
    delivery_status,
    post_delivery,
)

__all__ = ["browser"]  # a fixture, used by name

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def app_files(base_image: str, text: str) -> dict[str, str]:
    return {
        "Dockerfile": f"FROM {base_image}\nCOPY index.html /www/index.html\n"
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n',
        "index.html": f"{text}\n",
    }


def installed(stack: Stack, base_image: str) -> str:
    """The App installed on a repository (master holds version one); returns its sha."""
    state = stack.github.state
    state.add_installation(INSTALLATION, "Codertocat")
    state.add_repository(INSTALLATION, REPOSITORY, default_branch="master")
    first = state.commit(REPOSITORY, app_files(base_image, "version one"), branch="master")
    payload = json_payload("installation__created.payload.json")
    payload["installation"]["id"] = INSTALLATION
    repo = state.repository(REPOSITORY)
    payload["repositories"] = [{"id": repo.id, "name": repo.name, "full_name": REPOSITORY}]
    delivery_id = post_delivery(stack, "installation", payload)
    wait_for(lambda: delivery_status(stack, delivery_id) == "processed", 60, what="installation")
    return first


def production(stack: Stack) -> tuple[Environment, str | None] | None:
    """Production and the commit its current deployment runs."""
    with stack.database.session_scope() as session:
        env = session.scalar(
            select(Environment)
            .join(Service)
            .where(Service.name == "hello", Environment.kind == "production")
        )
        if env is None:
            return None
        current = env.current_deployment
        return env, current.build.commit_sha if current is not None else None


def serving(stack: Stack, sha: str, text: str) -> Environment | None:
    """Production once it runs ``sha`` and answers ``text`` on its address."""
    found = production(stack)
    if found is None:
        return None
    env, running = found
    if env.status != "running" or running != sha or not env.address:
        return None
    try:
        answer = requests.get(f"http://{env.address}/", timeout=2)
    except requests.RequestException:
        return None
    return env if answer.text.strip() == text else None


def submit(driver: Any, form_css: str, **fields: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    form = driver.find_element(By.CSS_SELECTOR, form_css)
    for name, value in fields.items():
        element = form.find_element(By.NAME, name)
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


@pytest.mark.timeout(900)
def test_create_deploy_and_roll_back_from_the_dashboard(
    docker_cleanup: None,  # first: it removes the containers after the agent has stopped
    stack: Stack,
    base_image: str,
    registry: Any,
    browser: Any,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    first = installed(stack, base_image)
    stack.create_host("web-1")
    stack.start_buildworker("build-actions")
    stack.start_agent("web-1")
    browser.get(f"{stack.url}/login")
    browser.find_element(By.NAME, "token").send_keys(make_token(stack.database, "admin", "ann"))
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "form.logout"))

    browser.get(f"{stack.url}/services/new")
    submit(
        browser,
        "#new-service",
        name="hello",
        repository=REPOSITORY,
        branch="master",
        port="8080",
        host="web-1",
    )
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "form.deploy"))
    service_page = browser.current_url

    submit(browser, "form.deploy", ref="master")
    env = wait_for(lambda: serving(stack, first, "version one"), 300, 0.5, "version one")

    second = stack.github.state.commit(
        REPOSITORY, app_files(base_image, "version two"), branch="master"
    )
    browser.get(service_page)
    submit(browser, "form.deploy", ref=second)
    wait_for(lambda: serving(stack, second, "version two"), 300, 0.5, "version two")

    browser.get(f"{stack.url}/environments/{env.id}")
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    forged = requests.post(
        f"{stack.url}/environments/{env.id}/rollback", cookies=cookies, timeout=10
    )
    assert forged.status_code == 400
    assert production(stack)[1] == second  # type: ignore[index]

    browser.find_element(
        By.CSS_SELECTOR, f"form[action='/environments/{env.id}/rollback'] button"
    ).click()
    wait_for(lambda: serving(stack, first, "version one"), 120, 0.5, "rolled back to one")
