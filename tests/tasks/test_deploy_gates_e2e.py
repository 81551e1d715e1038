"""End to end with real Celery workers, git, the Docker engine and the registry: a service
that waits for checks builds a push at once, holds it in awaiting_checks (the worker's
last step answered 202), and deploys it once the CI's check passes on the test GitHub."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from sqlalchemy import select

from controlplane.models import Deployment
from controlplane.services import catalog
from tests.fixtures.stack import Stack, wait_for
from tests.tasks.test_pipeline_e2e import (
    REPOSITORY,
    build_of,
    install,
    post_delivery,
    push,
    stack_read_headers,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CI_APP = 31337


def test_a_push_builds_at_once_and_deploys_once_the_required_check_is_green(
    stack: Stack, base_image: str, registry: Any, docker_cleanup: None
) -> None:
    install(stack, base_image)
    with stack.database.session_scope() as session:
        (service,) = catalog.list_services(session)
        catalog.update_service(
            session,
            service.id,
            {"deploy_when": "checks_passed", "required_checks": ["ci/test"]},
            "test",
        )
    stack.start_buildworker("build-gates")
    sha = push(stack, {"index.html": "version 1\n"}, 1_700_000_000)

    def held() -> Any:
        build = build_of(stack, sha)
        return build if build is not None and build.status == "awaiting_checks" else None

    build = wait_for(held, 300, 0.5, "the build to be built and held for its checks")
    headers = stack_read_headers(stack)

    def looked() -> bool:  # the control worker asked GitHub as soon as the build was held
        url = f"{stack.url}/v1/builds/{build.id}"
        return "ci/test (not reported yet)" in requests.get(url, headers=headers, timeout=10).text

    wait_for(looked, 60, 0.5, "the control worker to look at the commit's checks")

    def said_held() -> bool:
        url = f"{stack.url}/v1/builds/{build.id}/logs"
        lines = requests.get(url, headers=headers, timeout=10).json()["lines"]
        return any("built; not deployed yet (awaiting_checks)" in line for line in lines)

    wait_for(said_held, 60, 0.5, "the worker's log to say the deployment waits")
    with stack.database.session_scope() as session:
        assert session.scalar(select(Deployment).where(Deployment.build_id == build.id)) is None

    state = stack.github.state
    run = state.add_check_run(REPOSITORY, sha, "ci/test", app_id=CI_APP, conclusion="success")
    post_delivery(stack, "check_run", state.check_run_payload(run, "completed", stack.github.url))

    def deployed() -> Deployment | None:
        with stack.database.session_scope() as session:
            return session.scalar(select(Deployment).where(Deployment.build_id == build.id))

    wait_for(deployed, 120, 0.5, "the deployment once the check passed")
    assert build_of(stack, sha).status == "succeeded"  # type: ignore[union-attr]
    image = build.images["app"]
    registry.delete_image(image["repository"].split("/", 1)[1], image["tag"])
