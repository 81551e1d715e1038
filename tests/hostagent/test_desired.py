"""Desired-state parsing is strict; labels are valid Traefik syntax."""

from __future__ import annotations

import copy

import pytest

from hostagent.desired import (
    Routing,
    config_hash,
    host_rule,
    parse_desired_state,
    traefik_labels,
    valid_domain,
)
from hostagent.errors import InvalidDesiredState, TransientAgentError
from tests.hostagent.factories import IMAGE, env_body, state_body


def test_parses_the_contract_example():
    state = parse_desired_state(state_body(env_body()))
    assert state.generation == 42 and state.complete and state.host == "web-1"
    env = state.environments[0]
    assert env.image == IMAGE and env.port == 8080
    assert env.domains == ("hello.example.com",)
    assert env.resources.cpus == 0.5 and env.resources.memory == "256m"
    assert env.health_check is not None and env.health_check.path == "/"
    assert state.routing == Routing("websecure", "letsencrypt")


def test_secrets_never_show_in_repr():
    body = env_body(
        env={"SECRET": "hunter2"},
        registry={"address": "r", "username": "u", "password": "pw-secret"},
    )
    text = repr(parse_desired_state(state_body(body)))
    assert "hunter2" not in text and "pw-secret" not in text


def test_empty_list_is_trusted_only_when_complete():
    assert parse_desired_state(state_body()).environments == ()
    with pytest.raises(InvalidDesiredState, match="not marked complete"):
        parse_desired_state(state_body(complete=False))


def _mutate(path, value):
    body = state_body(env_body())
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


E = "environments"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not an object", "body must be an object"),
        ({"generation": 1}, "environments must be a list"),
        (_mutate(["generation"], "42"), "generation must be an integer"),
        (_mutate(["generation"], True), "generation must be an integer"),
        (_mutate([E, 0, "name"], "Hello_World"), "name must be"),
        (_mutate([E, 0, "kind"], "staging"), "kind must be"),
        (_mutate([E, 0, "mode"], "swarm"), "mode must be"),
        (_mutate([E, 0, "image"], "127.0.0.1:5001/a/b:latest"), "pinned by @sha256"),
        (_mutate([E, 0, "image"], KeyError), "image must be"),
        (_mutate([E, 0, "port"], 70000), "port must be at most"),
        (_mutate([E, 0, "domains"], ["bad domain.com"]), "not a valid host name"),
        (_mutate([E, 0, "domains"], ["a.com`) || Host(`evil.com"]), "not a valid host name"),
        (_mutate([E, 0, "domains"], ["-x.com"]), "not a valid host name"),
        (_mutate([E, 0, "env"], {"A=B": "x"}), "environment variable name"),
        (_mutate([E, 0, "env"], {"A": 1}), "env.A must be a string"),
        (_mutate([E, 0, "health_check"], {"path": "no-slash"}), "absolute URL path"),
        (_mutate([E, 0, "resources"], {"memory": "lots"}), "memory must look like"),
        (_mutate([E, 0, "resources"], {"restart": "sometimes"}), "restart must be"),
        (_mutate([E, 0, "deployment_id"], None), "deployment_id must be"),
        (_mutate([E, 0, "commit_sha"], "abc"), "commit_sha must be"),
        (_mutate(["routing"], {"entrypoint": "web secure"}), "routing.entrypoint"),
        (state_body(env_body(), env_body()), "same environment twice"),
    ],
)
def test_rejects_what_it_cannot_trust(body, message):
    with pytest.raises(InvalidDesiredState, match=message) as info:
        parse_desired_state(body)
    assert isinstance(info.value, TransientAgentError)


def test_bad_env_value_error_does_not_echo_the_value():
    with pytest.raises(InvalidDesiredState) as info:
        parse_desired_state(_mutate([E, 0, "env"], {"TOKEN": ["s3cr3t"]}))
    assert "s3cr3t" not in str(info.value)


def test_compose_mode_validation():
    good = env_body(
        mode="compose",
        image=None,
        compose="services:\n  web:\n    image: x@sha256:" + "1" * 64 + "\n  db: {}\n",
        routed_service="web",
    )
    env = parse_desired_state(state_body(good)).environments[0]
    assert env.compose_services == ("db", "web")
    for bad, message in [
        ({"compose": "services: [1, 2"}, "not valid YAML"),
        ({"compose": "version: '3'\n"}, "services must be"),
        ({"routed_service": "nope"}, "names no service"),
        ({"compose": None}, "compose must be"),
    ]:
        with pytest.raises(InvalidDesiredState, match=message):
            parse_desired_state(state_body({**copy.deepcopy(good), **bad}))


def test_domains_are_normalised():
    body = env_body(domains=["Hello.Example.COM.", "hello.example.com"])
    assert parse_desired_state(state_body(body)).environments[0].domains == ("hello.example.com",)


@pytest.mark.parametrize(
    ("domain", "ok"),
    [
        ("example.com", True),
        ("a-b.c.example", True),
        ("localhost", True),
        ("x" * 63 + ".com", True),
        ("x" * 64 + ".com", False),
        ("a..com", False),
        ("a_b.com", False),
        ("a.com`", False),
        ("", False),
        ("-a.com", False),
        ("a-.com", False),
        ("*.example.com", False),
    ],
)
def test_valid_domain(domain, ok):
    assert valid_domain(domain) is ok


def test_traefik_labels():
    labels = traefik_labels(
        "hello", ("a.example.com", "b.example.com"), 8080, Routing("websecure", "letsencrypt")
    )
    assert labels == {
        "traefik.enable": "true",
        "traefik.http.routers.hello.rule": "Host(`a.example.com`) || Host(`b.example.com`)",
        "traefik.http.routers.hello.entrypoints": "websecure",
        "traefik.http.routers.hello.service": "hello",
        "traefik.http.routers.hello.tls": "true",
        "traefik.http.routers.hello.tls.certresolver": "letsencrypt",
        "traefik.http.services.hello.loadbalancer.server.port": "8080",
    }


def test_traefik_labels_without_tls_or_route():
    labels = traefik_labels("hello", ("a.example.com",), 80, Routing("web", None))
    assert "traefik.http.routers.hello.tls.certresolver" not in labels
    assert traefik_labels("hello", (), 80, Routing()) == {}
    assert traefik_labels("hello", ("a.com",), None, Routing()) == {}


def test_host_rule_refuses_bad_domains():
    with pytest.raises(ValueError, match="not a valid host name"):
        host_rule(["a.com`) || PathPrefix(`/"])


def test_config_hash_covers_what_recreates():
    base = parse_desired_state(state_body(env_body())).environments[0]
    digest = config_hash(base)
    for change in [
        {"image": IMAGE.replace("ab", "cd")},
        {"env": {"KEY": "other"}},
        {"port": 9090},
        {"domains": ["other.example.com"]},
        {"resources": {"cpus": 1, "memory": "256m", "restart": "unless-stopped"}},
        {"health_check": {"path": "/health", "timeout": 60}},
    ]:
        other = parse_desired_state(state_body(env_body(**change))).environments[0]
        assert config_hash(other) != digest, change
    assert config_hash(base, "127.0.0.1") != digest
    same = parse_desired_state(state_body(env_body(deployment_id=99))).environments[0]
    assert config_hash(same) == digest
