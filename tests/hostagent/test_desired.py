"""Desired-state parsing is strict; labels are valid Traefik syntax."""

from __future__ import annotations

import copy
import re

import pytest

from contracts.agentwire import Routing, memory_bytes, valid_domain
from hostagent.confighash import config_hash
from hostagent.errors import InvalidDesiredState, TransientAgentError
from hostagent.snapshot import PreviewLimits, limit_previews, parse_desired_state
from hostagent.traefik import host_rule, traefik_labels
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
        (_mutate(["routing"], {"entrypoint": "web secure"}), "routing.entrypoint"),
        (_mutate(["host"], ""), "host must be"),
    ],
)
def test_rejects_a_frame_it_cannot_trust(body, message):
    with pytest.raises(InvalidDesiredState, match=message) as info:
        parse_desired_state(body)
    assert isinstance(info.value, TransientAgentError)


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n"
    for i in range(8)
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "Staging!"}, "kind must be"),
        ({"mode": "swarm"}, "mode must be"),
        ({"image": "127.0.0.1:5001/a/b:latest"}, "pinned by @sha256"),
        ({"image": KeyError}, "image must be"),
        ({"port": 70000}, "port must be at most"),
        ({"domains": ["bad domain.com"]}, "not a valid host name"),
        ({"domains": ["a.com`) || Host(`evil.com"]}, "not a valid host name"),
        ({"domains": ["-x.com"]}, "not a valid host name"),
        ({"env": {"A=B": "x"}}, "environment variable name"),
        ({"env": {"A": 1}}, "env.A must be a string"),
        ({"health_check": {"path": "no-slash"}}, "absolute URL path"),
        ({"resources": {"memory": "lots"}}, "memory must look like"),
        ({"resources": {"restart": "sometimes"}}, "restart must be"),
        ({"resources": {"pids": 0}}, "pids must be"),
        ({"commit_sha": "abc"}, "commit_sha must be"),
        ({"compose_allow": "privileged"}, "compose_allow must be a list"),
        ({"compose_allow": ["cap add"]}, "not a compose key"),
        ({"mode": "compose", "compose": "services:\n  'my web': {}\n"}, "invalid service name"),
        ({"mode": "compose", "compose": ALIAS_BOMB}, "aliases"),
        ({"mode": "compose", "compose": "services: [1, 2"}, "not valid YAML"),
    ],
)
def test_one_bad_environment_is_refused_alone(change, message):
    bad = env_body("bad", deployment_id=9)
    for key, value in change.items():
        if value is KeyError:
            del bad[key]
        else:
            bad[key] = value
    state = parse_desired_state(state_body(env_body("good"), bad, env_body("other")))
    assert [env.name for env in state.environments] == ["good", "other"]
    (refused,) = state.refused
    assert refused.name == "bad" and refused.deployment_id == 9
    assert re.search(message, refused.reason), refused.reason
    assert refused.reason.startswith("desired state: environment 'bad':")


def test_a_refused_environment_without_a_deployment_id_is_still_reported():
    state = parse_desired_state(state_body(env_body("bad", deployment_id=None)))
    assert state.environments == ()
    (refused,) = state.refused
    assert refused.name == "bad" and refused.deployment_id is None
    assert "deployment_id must be" in refused.reason


def test_an_environment_without_a_valid_name_is_left_out_entirely():
    state = parse_desired_state(
        state_body(env_body("good"), env_body("Hello_World"), {"name": 1}, "not an object")
    )
    assert [env.name for env in state.environments] == ["good"]
    assert state.refused == ()


def test_a_name_given_twice_refuses_every_entry_of_it():
    state = parse_desired_state(
        state_body(env_body("twice"), env_body("good"), env_body("twice", deployment_id=8))
    )
    assert [env.name for env in state.environments] == ["good"]
    (refused,) = state.refused
    assert refused.name == "twice" and "named twice" in refused.reason
    # One valid and one invalid entry of a name: neither runs.
    state = parse_desired_state(state_body(env_body("twice"), env_body("twice", kind="x")))
    assert state.environments == () and [r.name for r in state.refused] == ["twice"]


def test_bad_env_value_error_does_not_echo_the_value():
    state = parse_desired_state(_mutate([E, 0, "env"], {"TOKEN": ["s3cr3t"]}))
    (refused,) = state.refused
    assert "env.TOKEN" in refused.reason and "s3cr3t" not in refused.reason


def test_compose_mode_validation():
    good = env_body(
        mode="compose",
        image=None,
        compose="services:\n  web:\n    image: x@sha256:" + "1" * 64 + "\n  db: {}\n",
        routed_service="web",
        compose_allow=["cap_add"],
    )
    env = parse_desired_state(state_body(good)).environments[0]
    assert env.compose_services == ("db", "web")
    assert env.allowed_compose_keys == frozenset({"cap_add"})
    preview = parse_desired_state(state_body({**good, "kind": "preview"})).environments[0]
    assert preview.compose_allow == frozenset({"cap_add"})
    assert preview.allowed_compose_keys == frozenset()  # never for a preview
    for bad, message in [
        ({"compose": "version: '3'\n"}, "services must be"),
        ({"routed_service": "nope"}, "names no service"),
        ({"compose": None}, "compose must be"),
        ({"compose": "services:\n  web: {}\n  web: {}\n"}, "duplicate key"),
    ]:
        state = parse_desired_state(state_body({**copy.deepcopy(good), **bad}))
        (refused,) = state.refused
        assert re.search(message, refused.reason), refused.reason


def test_yaml_is_read_as_compose_reads_it():
    compose = "services:\n  on:\n    image: x@sha256:" + "1" * 64 + "\n"
    body = env_body(mode="compose", image=None, compose=compose, routed_service="on")
    assert parse_desired_state(state_body(body)).environments[0].compose_services == ("on",)


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
    proxied = traefik_labels("hello", ("a.example.com",), 80, Routing(), network="proxy")
    assert proxied["traefik.docker.network"] == "proxy"


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
    assert config_hash(base, proxy_network="") == digest  # set later, it counts
    assert config_hash(base, proxy_network="traefik_proxy") != digest
    same = parse_desired_state(state_body(env_body(deployment_id=99))).environments[0]
    assert config_hash(same) == digest


def test_config_hash_counts_new_fields_only_when_set():
    """An agent upgrade must not restart what runs: unset new fields leave the hash alone."""
    base = parse_desired_state(state_body(env_body())).environments[0]
    digest = config_hash(base)
    unset = env_body(compose_allow=[], resources={**env_body()["resources"], "pids": None})
    assert config_hash(parse_desired_state(state_body(unset)).environments[0]) == digest
    for change in [
        {"compose_allow": ["cap_add"]},
        {"resources": {**env_body()["resources"], "pids": 100}},
    ]:
        other = parse_desired_state(state_body(env_body(**change))).environments[0]
        assert config_hash(other) != digest, change


@pytest.mark.parametrize(
    ("resources", "cpus", "memory", "pids"),
    [
        ({}, 1.0, "512m", 256),
        ({"cpus": 0.25, "memory": "64m", "pids": 50}, 0.25, "64m", 50),
        ({"cpus": 4, "memory": "2g", "pids": 10_000}, 1.0, "512m", 256),
        ({"memory": "536870912"}, 1.0, "536870912", 256),
        ({"memory": "536870913"}, 1.0, "512m", 256),
    ],
)
def test_previews_get_the_tighter_of_their_limits_and_the_defaults(resources, cpus, memory, pids):
    state = limit_previews(
        parse_desired_state(
            state_body(
                env_body("prod", resources=dict(resources)),
                env_body("pr", kind="preview", resources=dict(resources)),
            )
        ),
        PreviewLimits(),
    )
    prod, preview = state.environments
    assert (
        prod.resources
        == parse_desired_state(state_body(env_body("prod", resources=dict(resources))))
        .environments[0]
        .resources
    )
    assert (preview.resources.cpus, preview.resources.memory, preview.resources.pids) == (
        cpus,
        memory,
        pids,
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [("512m", 512 << 20), ("1g", 1 << 30), ("64K", 64 << 10), ("100", 100), ("7b", 7)],
)
def test_memory_bytes(text, size):
    assert memory_bytes(text) == size


def test_a_preview_with_too_many_services_is_refused_with_the_key_path():
    """Its budget shared by hundreds of services would be nothing each: refused on its own
    (key path ``services``), production with as many services and the rest are served."""
    compose = "services:\n" + "".join(f"  s{index}:\n    image: {IMAGE}\n" for index in range(5))
    body = {"mode": "compose", "image": None, "compose": compose}
    state = limit_previews(
        parse_desired_state(
            state_body(
                env_body("prod", **body),
                env_body("pr", kind="preview", **body),
                env_body("small", kind="preview"),
            )
        ),
        PreviewLimits(services=4),
    )
    assert [env.name for env in state.environments] == ["prod", "small"]
    (refused,) = state.refused
    assert refused.name == "pr" and refused.deployment_id == 7
    assert refused.reason.startswith("compose file refused: services: ")
    assert "at most 4 services, this file has 5" in refused.reason
    allowed = parse_desired_state(state_body(env_body("pr", kind="preview", **body)))
    assert limit_previews(allowed, PreviewLimits(services=5)).refused == ()


def test_environments_the_control_plane_withheld_are_kept_and_not_reported_as_refused():
    body = state_body(env_body("good"))
    body["withheld"] = [
        {"name": "held", "reason": "compose file refused: services.web.cap_add"},
        {"name": "Not_A_Name", "reason": "x"},
        "not an object",
    ]
    state = parse_desired_state(body)
    assert [env.name for env in state.environments] == ["good"]
    (held,) = state.refused
    assert held.name == "held" and held.withheld and held.deployment_id is None
    assert "cap_add" in held.reason


def test_a_withheld_list_that_is_not_a_list_is_a_frame_error():
    body = state_body(env_body("good"))
    body["withheld"] = {"name": "held"}
    with pytest.raises(InvalidDesiredState, match="withheld must be a list"):
        parse_desired_state(body)
