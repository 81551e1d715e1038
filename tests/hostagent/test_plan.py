"""plan() is pure: every case is a row, no Docker."""

from __future__ import annotations

import pytest

from hostagent.observe import ObservedState
from hostagent.plan import (
    ComposeDown,
    ComposeUp,
    RemoveContainer,
    RemoveEnvironment,
    StartContainer,
    StopContainer,
    WaitHealthy,
    container_name,
    failure_key,
    plan,
)
from tests.hostagent.factories import (
    container,
    desired,
    env_body,
    hash_of,
    observed,
)

COMPOSE = """
services:
  web:
    image: 127.0.0.1:5001/a/web@sha256:{web}
  worker:
    image: 127.0.0.1:5001/a/worker@sha256:{worker}
""".format(web="1" * 64, worker="2" * 64)


def kinds(actions):
    return [(type(a).__name__, getattr(a, "container_id", None)) for a in actions]


STATE = desired(env_body())
NEW = hash_of(STATE, "hello")


@pytest.mark.parametrize(
    ("case", "observed_state", "expected"),
    [
        (
            "create: nothing runs yet",
            observed(),
            [("StartContainer", None), ("WaitHealthy", None)],
        ),
        (
            "keep: running with the same config",
            observed(container("c1", config_hash=NEW)),
            [],
        ),
        (
            "keep: healthy by Docker's health check",
            observed(container("c1", config_hash=NEW, health="healthy")),
            [],
        ),
        (
            "recreate on config change: start new, wait, then stop and remove the old",
            observed(container("old1", config_hash="old")),
            [
                ("StartContainer", None),
                ("WaitHealthy", None),
                ("StopContainer", "old1"),
                ("RemoveContainer", "old1"),
            ],
        ),
        (
            "recreate when stopped or killed by hand: the dead one goes first",
            observed(container("c1", config_hash=NEW, status="exited", exit_code=137)),
            [("RemoveContainer", "c1"), ("StartContainer", None), ("WaitHealthy", None)],
        ),
        (
            "an interrupted switch: the new one serves, the old one goes",
            observed(
                container("old1", config_hash="old", created="1"),
                container("new1", config_hash=NEW, created="2"),
            ),
            [("StopContainer", "old1"), ("RemoveContainer", "old1")],
        ),
        (
            "new one still starting: the old one is kept until it is healthy",
            observed(
                container("old1", config_hash="old", created="1"),
                container("new1", config_hash=NEW, health="starting", created="2"),
            ),
            [],
        ),
        (
            "an exited old container is cleaned up after the switch",
            observed(
                container("old1", config_hash="old", status="exited"),
            ),
            [("StartContainer", None), ("WaitHealthy", None), ("RemoveContainer", "old1")],
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_single_container(case, observed_state, expected):
    assert kinds(plan(STATE, observed_state)) == expected


def test_zero_downtime_order_and_names():
    actions = plan(STATE, observed(container("old1", config_hash="old")))
    start, wait, stop, remove = actions
    assert isinstance(start, StartContainer) and isinstance(wait, WaitHealthy)
    assert isinstance(stop, StopContainer) and isinstance(remove, RemoveContainer)
    assert start.name == wait.name == f"hello-7-{NEW[:10]}"
    assert start.name == container_name(start.spec, NEW)
    assert start.config_hash == NEW
    assert start.host == "web-1"


def test_config_change_of_env_var_changes_hash_and_recreates():
    changed = desired(env_body(env={"KEY": "other"}))
    assert hash_of(changed, "hello") != NEW
    assert kinds(plan(changed, observed(container("c1", config_hash=NEW))))[0] == (
        "StartContainer",
        None,
    )


def test_redeploy_with_same_config_keeps_container():
    redeploy = desired(env_body(deployment_id=8, build_id=4))
    assert hash_of(redeploy, "hello") == NEW
    assert plan(redeploy, observed(container("c1", config_hash=NEW))) == []


def test_publish_host_is_part_of_the_config():
    assert hash_of(STATE, "hello", "127.0.0.1") != NEW
    actions = plan(STATE, observed(container("c1", config_hash=NEW)), publish_host="127.0.0.1")
    assert isinstance(actions[0], StartContainer)


def test_a_proxy_network_set_later_recreates_what_runs():
    actions = plan(STATE, observed(container("c1", config_hash=NEW)), proxy_network="proxy")
    assert isinstance(actions[0], StartContainer)


def test_remove_when_no_longer_desired():
    state = desired(env_body())
    actions = plan(
        state,
        observed(
            container("c1", config_hash=NEW),
            container("p1", env="hello-pr-3", kind="preview", deployment_id=9),
        ),
    )
    assert actions == [
        RemoveEnvironment(
            environment="hello-pr-3",
            kind="preview",
            deployment_id=9,
            compose=False,
            container_ids=("p1",),
        )
    ]
    assert actions[0].remove_volumes is True


def test_empty_complete_state_removes_everything():
    state = desired()
    actions = plan(state, observed(container("c1"), container("c2", env="other")))
    assert [a.environment for a in actions] == ["hello", "other"]
    assert all(isinstance(a, RemoveEnvironment) for a in actions)


@pytest.mark.parametrize("state", [None, desired(env_body(), complete=False)])
def test_nothing_destructive_without_a_trusted_complete_state(state):
    current = observed(container("c1", config_hash=NEW), container("x1", env="other"))
    actions = plan(state, current)
    assert not any(
        isinstance(a, RemoveEnvironment | StopContainer | RemoveContainer) for a in actions
    )


def test_nothing_at_all_when_nothing_is_known():
    assert plan(None, observed(container("c1", status="exited"))) == []


def test_failed_deployment_is_not_retried_until_the_state_changes():
    env = STATE.environment("hello")
    assert env is not None
    failed = {failure_key(env, NEW)}
    current = observed(container("old1", config_hash="old"))
    assert plan(STATE, current, failed=failed) == []
    # A new deployment (even of the same config) is tried again.
    redeploy = desired(env_body(deployment_id=8))
    assert kinds(plan(redeploy, current, failed=failed))[0] == ("StartContainer", None)


def test_plan_is_pure_and_repeatable():
    current = observed(container("old1", config_hash="old"))
    assert plan(STATE, current) == plan(STATE, current)
    assert plan(STATE, ObservedState()) == plan(STATE, ObservedState())


# -- compose ------------------------------------------------------------------------------

COMPOSE_STATE = desired(
    env_body(mode="compose", image=None, compose=COMPOSE, routed_service="web", port=80)
)
CHASH = hash_of(COMPOSE_STATE, "hello")


def compose_container(cid, service, **kwargs):
    kwargs.setdefault("config_hash", CHASH)
    return container(cid, role="compose", compose_service=service, **kwargs)


@pytest.mark.parametrize(
    ("case", "observed_state", "expected"),
    [
        ("create", observed(), ["ComposeUp"]),
        (
            "keep",
            observed(compose_container("w", "web"), compose_container("k", "worker")),
            [],
        ),
        (
            "a one-shot that finished with 0 is not drift",
            observed(
                compose_container("w", "web"),
                compose_container("k", "worker", status="exited", exit_code=0),
            ),
            [],
        ),
        (
            "a service killed by hand",
            observed(
                compose_container("w", "web"),
                compose_container("k", "worker", status="exited", exit_code=137),
            ),
            ["ComposeUp"],
        ),
        ("a service removed by hand", observed(compose_container("w", "web")), ["ComposeUp"]),
        (
            "config changed: the routed service is switched beside the old one",
            observed(
                compose_container("w", "web", config_hash="old"),
                compose_container("k", "worker", config_hash="old"),
            ),
            [
                "ComposeUp",
                "ComposeStartRouted",
                "ComposeWaitRouted",
                "StopContainer",
                "RemoveContainer",
            ],
        ),
        (
            "config changed while the routed service is down: up in place",
            observed(
                compose_container("w", "web", config_hash="old", status="exited", exit_code=137),
                compose_container("k", "worker", config_hash="old"),
            ),
            ["ComposeUp"],
        ),
        (
            "switch from a single container: up, then the old container goes",
            observed(container("c1")),
            ["ComposeUp", "StopContainer", "RemoveContainer"],
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_compose(case, observed_state, expected):
    assert [type(a).__name__ for a in plan(COMPOSE_STATE, observed_state)] == expected


def test_compose_up_carries_the_file():
    (action,) = plan(COMPOSE_STATE, observed())
    assert isinstance(action, ComposeUp)
    assert action.file_text == COMPOSE
    assert action.config_hash == CHASH


def test_compose_removed_preview_takes_its_volumes():
    state = desired(env_body())
    current = observed(
        container("c1", config_hash=NEW),
        compose_container("w", "web", env="hello-pr-1", kind="preview"),
    )
    (action,) = plan(state, current)
    assert isinstance(action, RemoveEnvironment)
    assert action.compose and action.remove_volumes


def test_switch_from_compose_to_container_downs_the_project_after_the_switch():
    current = observed(compose_container("w", "web"))
    actions = plan(STATE, current)
    assert [type(a).__name__ for a in actions] == ["StartContainer", "WaitHealthy", "ComposeDown"]
    assert actions[-1] == ComposeDown("hello", remove_volumes=False)


def test_a_refused_environment_is_neither_planned_nor_torn_down():
    state = desired(env_body(), env_body("broken", kind="No Kind!"))
    assert [r.name for r in state.refused] == ["broken"]
    current = observed(
        container("c1", config_hash=NEW),
        container("b1", env="broken", kind="preview", deployment_id=3),
        container("g1", env="gone", deployment_id=2),
    )
    actions = plan(state, current)
    assert [(type(a).__name__, a.environment) for a in actions] == [("RemoveEnvironment", "gone")]


def test_a_failed_or_refused_compose_config_keeps_what_serves():
    env = COMPOSE_STATE.environment("hello")
    assert env is not None
    current = observed(container("c1"))  # the single container it was before
    assert plan(COMPOSE_STATE, current, failed={failure_key(env, CHASH)}) == []


def test_a_withheld_environment_is_neither_planned_nor_torn_down():
    from hostagent.snapshot import parse_desired_state
    from tests.hostagent.factories import state_body

    body = state_body(env_body())
    body["withheld"] = [{"name": "held", "reason": "cannot be rendered"}]
    state = parse_desired_state(body)
    current = observed(
        container("c1", config_hash=hash_of(state, "hello")),
        container("h1", env="held", kind="preview", deployment_id=3),
    )
    assert plan(state, current) == []
    # Without the withheld entry the complete snapshot would remove it.
    del body["withheld"]
    removed = plan(parse_desired_state(body), current)
    assert [(type(a).__name__, a.environment) for a in removed] == [("RemoveEnvironment", "held")]
