"""The compose switch as planned: the routed service beside its old container, the rest
in ``depends_on`` order around it (pure; the real engine is test_compose_zero_downtime_docker)."""

from __future__ import annotations

import pytest

from hostagent.composeorder import switch_phases
from hostagent.plan import (
    ComposeStartRouted,
    ComposeUp,
    ComposeWaitRouted,
    RemoveContainer,
    StopContainer,
    failure_key,
    plan,
)
from tests.hostagent.factories import container, desired, env_body, hash_of, observed

# cache <- web <- worker <- reporter; db <- web; metrics stands alone.
COMPOSE = """
services:
  db:
    image: 127.0.0.1:5001/a/db@sha256:{d}
  cache:
    image: 127.0.0.1:5001/a/cache@sha256:{d}
  web:
    image: 127.0.0.1:5001/a/web@sha256:{d}
    depends_on:
      db: {{condition: service_started}}
      cache: {{}}
  worker:
    image: 127.0.0.1:5001/a/worker@sha256:{d}
    depends_on: [web]
  reporter:
    image: 127.0.0.1:5001/a/reporter@sha256:{d}
    depends_on: [worker, db]
  metrics:
    image: 127.0.0.1:5001/a/metrics@sha256:{d}
""".format(d="1" * 64)

SERVICES = ("db", "cache", "web", "worker", "reporter", "metrics")


def state_of(compose: str = COMPOSE, **overrides):
    overrides.setdefault("routed_service", "web")
    overrides.setdefault("port", 80)
    return desired(env_body(mode="compose", image=None, compose=compose, **overrides))


STATE = state_of()
NEW = hash_of(STATE, "hello")


def member(cid: str, service: str, **kwargs):
    kwargs.setdefault("config_hash", "old")
    return container(cid, role="compose", compose_service=service, **kwargs)


def running_old() -> list:
    return [member(f"c-{name}", name) for name in SERVICES]


def test_phases_follow_depends_on_both_ways_and_transitively():
    assert switch_phases(COMPOSE, "web") == (("db", "cache", "metrics"), ("worker", "reporter"))
    assert switch_phases(COMPOSE, "metrics") == (("db", "cache", "web", "worker", "reporter"), ())


@pytest.mark.parametrize(
    "compose",
    [
        "services:\n  web:\n    image: x\n    container_name: fixed\n",  # cannot run twice
        "services: [",  # not YAML: the apply refuses it with the reason
        "services:\n  other:\n    image: x\n",  # no such service
    ],
)
def test_no_phases_where_the_routed_service_cannot_be_switched(compose):
    assert switch_phases(compose, "web") is None


def test_the_routed_service_is_switched_beside_the_old_one_in_dependency_order():
    actions = plan(STATE, observed(*running_old()))
    assert [type(a).__name__ for a in actions] == [
        "ComposeUp",
        "ComposeStartRouted",
        "ComposeWaitRouted",
        "StopContainer",
        "RemoveContainer",
        "ComposeUp",
    ]
    before, start, wait, stop, remove, after = actions
    assert isinstance(before, ComposeUp) and before.services == ("db", "cache", "metrics")
    assert isinstance(start, ComposeStartRouted) and start.replicas == 2
    assert start.config_hash == NEW and wait == ComposeWaitRouted("hello", start.spec, NEW)
    assert isinstance(stop, StopContainer) and stop.container_id == "c-web"
    assert isinstance(remove, RemoveContainer) and remove.container_id == "c-web"
    assert isinstance(after, ComposeUp) and after.services == ("worker", "reporter")


def test_an_interrupted_switch_starts_over_beside_what_serves():
    current = observed(
        *running_old(),
        member("half-new", "web", config_hash=NEW, created="z1"),
        member("dead-old", "web", status="exited", exit_code=137, created="z2"),
    )
    actions = plan(STATE, current)
    assert [(type(a).__name__, getattr(a, "container_id", None)) for a in actions[:4]] == [
        ("StopContainer", "half-new"),
        ("RemoveContainer", "half-new"),
        ("RemoveContainer", "dead-old"),
        ("ComposeUp", None),
    ]
    start = next(a for a in actions if isinstance(a, ComposeStartRouted))
    assert start.replicas == 2  # the one that serves and the new one


@pytest.mark.parametrize(
    ("state", "current"),
    [
        (state_of(routed_service=None, port=None, domains=[]), running_old()),
        (
            state_of(
                COMPOSE.replace(
                    "    depends_on:\n      db:",
                    "    container_name: w\n    depends_on:\n      db:",
                )
            ),
            running_old(),
        ),
        (STATE, [member("c-web", "web", status="running", health="unhealthy")]),
        (STATE, []),
    ],
    ids=["nothing routed", "a fixed container name", "the old one is sick", "first deploy"],
)
def test_the_whole_project_is_brought_up_in_place_otherwise(state, current):
    (action,) = plan(state, observed(*current))
    assert isinstance(action, ComposeUp) and action.services == ()


def test_a_failed_switch_is_not_retried():
    env = STATE.environment("hello")
    assert env is not None
    assert plan(STATE, observed(*running_old()), failed={failure_key(env, NEW)}) == []
