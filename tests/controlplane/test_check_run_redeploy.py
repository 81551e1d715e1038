"""The Redeploy button of a successful production build's Check Run, against the test
GitHub server: offered in GitHub's shape, and its ``requested_action`` delivery (signed,
through ``/webhooks/github``) redeploys production while that commit is its head."""

from __future__ import annotations

import json

from flask.testing import FlaskClient
from sqlalchemy import select

from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.models import Build, WebhookDelivery
from controlplane.services import deliveries, githubwrites
from controlplane.services.outcomes import HandlerContext
from controlplane.settings import Settings
from tests.controlplane.test_feedback_checks import (  # noqa: F401  # fixtures among them
    deploy,
    github_app,
    new_build,
    post_check_run,
    run_steps,
    runs_of,
    service_id,
)
from tests.githubserver.server import GitHubServer


def process(database: Database, github: GitHubApp, delivery_id: int) -> tuple[str, list[int]]:
    with database.session_scope() as session:
        started = deliveries.process(session, delivery_id, HandlerContext(github)).builds
    with database.session_scope() as session:
        outcome = session.scalar(
            select(WebhookDelivery.outcome).where(WebhookDelivery.id == delivery_id)
        )
    return outcome or "", started


def test_a_deployed_production_run_offers_redeploy_and_the_button_rebuilds_its_head(
    client: FlaskClient,
    database: Database,
    settings: Settings,
    github_app: GitHubApp,  # noqa: F811
    github_server: GitHubServer,
    service_id: int,  # noqa: F811
) -> None:
    state = github_server.state
    build_id = new_build(database, state, service_id, "v1\n")
    run_steps(database, github_app, settings, state, build_id)
    (running,) = runs_of(state, build_id)
    assert running.actions == []  # offered only once deployed
    deploy(database, github_app, settings, build_id)
    (run,) = runs_of(state, build_id)
    assert run.conclusion == "success"
    assert run.actions == [githubwrites.REDEPLOY_ACTION]
    assert len(githubwrites.REDEPLOY_ACTION["identifier"]) <= 20

    payload = state.check_run_payload(run, "requested_action", github_server.url, "redeploy")
    outcome, (rebuilt,) = process(database, github_app, post_check_run(client, payload, "button"))
    assert "redeploys" in outcome
    with database.session_scope() as session:
        old, new = (session.get(Build, i) for i in (build_id, rebuilt))
        assert old is not None and new is not None
        assert (new.commit_sha, new.environment_id, new.status, new.author) == (
            old.commit_sha,
            old.environment_id,
            "queued",
            "github:octocat",
        )

    # Another identifier, another App's run, a run other than the one kept on the build
    # (its external id copied), or the button of a commit production has moved past
    # starts nothing.
    other = state.check_run_payload(run, "requested_action", github_server.url, "something")
    impostor = json.loads(json.dumps(payload))
    impostor["check_run"]["app"]["id"] = state.app_id + 1
    copied = json.loads(json.dumps(payload))
    copied["check_run"]["id"] = run.id + 1000
    outcome, started = process(database, github_app, post_check_run(client, copied, "copied"))
    assert started == [] and "is not a Portside build's" in outcome
    newer = new_build(database, state, service_id, "v2\n")
    for guid, sent in (("other", other), ("impostor", impostor), ("old", payload)):
        assert process(database, github_app, post_check_run(client, sent, guid))[1] == []
    with database.session_scope() as session:
        ids = session.scalars(select(Build.id).order_by(Build.id)).all()
    assert ids == [build_id, rebuilt, newer]
