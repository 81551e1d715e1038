"""plan() with replicas: N containers per environment, rolled one at a time."""

from __future__ import annotations

import dataclasses

import pytest

from contracts.agentwire import MAX_REPLICAS
from hostagent.plan import StartContainer, StopContainer, WaitHealthy, container_name, plan
from tests.hostagent.factories import container, desired, env_body, hash_of, observed

STATE = desired(env_body(replicas=3))
NEW = hash_of(STATE, "hello")
SPEC = STATE.environments[0]


def steps(actions: list[object]) -> list[tuple[str, str]]:
    return [
        (type(a).__name__, getattr(a, "container_id", None) or getattr(a, "name", ""))
        for a in actions
    ]


def test_the_replicas_are_parsed_and_default_to_one() -> None:
    assert SPEC.replicas == 3
    assert desired(env_body()).environments[0].replicas == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"replicas": 0}, "replicas must be an integer >= 1"),
        ({"replicas": "2"}, "replicas must be an integer >= 1"),
        ({"replicas": MAX_REPLICAS + 1}, f"replicas must be at most {MAX_REPLICAS}"),
    ],
)
def test_bad_replicas_refuse_the_environment(overrides: dict[str, object], message: str) -> None:
    state = desired(env_body(**overrides))
    assert not state.environments
    (refused,) = state.refused
    assert message in refused.reason


def test_a_compose_environment_runs_one_replica_only() -> None:
    compose = "services:\n  web:\n    image: 127.0.0.1:5001/a/web@sha256:" + "1" * 64 + "\n"
    state = desired(
        env_body(mode="compose", image=None, compose=compose, routed_service="web", replicas=2)
    )
    (refused,) = state.refused
    assert "must be 1 for a compose environment" in refused.reason


def test_a_new_environment_starts_every_replica_under_its_own_name() -> None:
    actions = plan(STATE, observed())
    names = [container_name(SPEC, NEW, i) for i in range(3)]
    assert steps(actions) == [
        step for name in names for step in (("StartContainer", name), ("WaitHealthy", name))
    ]
    assert names[0] == f"hello-7-{NEW[:10]}" and names[1] == f"hello-7-{NEW[:10]}-2"
    assert len(set(names)) == 3


def test_a_rolling_update_stops_one_old_replica_after_each_healthy_new_one() -> None:
    old = [container(f"o{i}", config_hash="old") for i in range(3)]
    actions = plan(STATE, observed(*old))
    kinds = [type(a).__name__ for a in actions]
    assert kinds == ["StartContainer", "WaitHealthy", "StopContainer", "RemoveContainer"] * 3
    # Never more than one old container retired before the next new one is healthy.
    serving = 3
    lowest = serving
    for action in actions:
        if isinstance(action, WaitHealthy):
            serving += 1
        elif isinstance(action, StopContainer):
            serving -= 1
        lowest = min(lowest, serving)
    assert lowest == 3
    assert [a.container_id for a in actions if isinstance(a, StopContainer)] == ["o0", "o1", "o2"]


def test_scaling_up_starts_only_the_missing_replicas_with_free_names() -> None:
    first = container_name(SPEC, NEW, 0)
    running = dataclasses.replace(container("a", config_hash=NEW), name=first)
    actions = plan(STATE, observed(running))
    started = [a.name for a in actions if isinstance(a, StartContainer)]
    assert started == [container_name(SPEC, NEW, 1), container_name(SPEC, NEW, 2)]
    assert not [a for a in actions if isinstance(a, StopContainer)]


def test_scaling_down_retires_the_oldest_surplus_once_the_rest_serve() -> None:
    current = [container(f"n{i}", config_hash=NEW) for i in range(5)]
    assert steps(plan(STATE, observed(*current))) == [
        ("StopContainer", "n0"),
        ("RemoveContainer", "n0"),
        ("StopContainer", "n1"),
        ("RemoveContainer", "n1"),
    ]


def test_nothing_is_retired_while_a_wanted_replica_is_sick() -> None:
    current = [container(f"n{i}", config_hash=NEW) for i in range(3)]
    sick = container("n3", config_hash=NEW, health="unhealthy")
    old = container("o0", config_hash="old")
    assert plan(STATE, observed(*current[:2], sick, old)) == []


def test_all_replicas_serving_keeps_everything() -> None:
    current = [container(f"n{i}", config_hash=NEW, health="healthy") for i in range(3)]
    assert plan(STATE, observed(*current)) == []
