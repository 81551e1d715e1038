"""Pieces of apply that need no engine: compose detection, override file, env hygiene."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.yamlsafe import dump_yaml
from hostagent import labels as lbl
from hostagent.apply import Applier
from hostagent.composefile import checked_compose, compose_images, sanitized_compose
from hostagent.composerun import compose_environment, detect_compose_command
from hostagent.containers import restart_policy
from hostagent.errors import EnvironmentRefused, PermanentAgentError
from hostagent.files import UnsafePath, open_dir, read_file, write_file
from hostagent.plan import ComposeUp
from tests.hostagent.factories import desired, env_body

COMPOSE = """
version: "3.8"
services:
  web:
    image: 127.0.0.1:5001/a/web@sha256:{d}
  db:
    image: 127.0.0.1:5001/a/db@sha256:{d}
    restart: always
""".format(d="1" * 64)


def fake_runner(working: set[tuple[str, ...]]):
    calls: list[list[str]] = []

    def run(command: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        if command[0] == "missing":
            raise FileNotFoundError(command[0])
        code = 0 if tuple(command[:-1]) in working else 1
        return subprocess.CompletedProcess(command, code, "", "")

    return run, calls


def test_prefers_compose_v2():
    run, calls = fake_runner({("docker", "compose"), ("docker-compose",)})
    assert detect_compose_command(None, run) == ("docker", "compose")
    assert calls == [["docker", "compose", "version"]]


def test_falls_back_to_compose_v1():
    run, calls = fake_runner({("docker-compose",)})
    assert detect_compose_command(None, run) == ("docker-compose",)
    assert calls[-1] == ["docker-compose", "version"]


def test_override_wins_and_nothing_is_run():
    run, calls = fake_runner(set())
    assert detect_compose_command(["docker-compose"], run) == ("docker-compose",)
    assert calls == []


def test_no_compose_at_all_is_permanent():
    run, _calls = fake_runner(set())
    with pytest.raises(PermanentAgentError, match="docker compose"):
        detect_compose_command(None, run)


def test_compose_environment_keeps_no_agent_secret():
    env = compose_environment(
        {
            "PATH": "/usr/bin",
            "HOME": "/root",
            "DOCKER_HOST": "unix:///x.sock",
            "PORTSIDE_TOKEN": "secret",
            "AWS_SECRET_ACCESS_KEY": "x",
        }
    )
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "DOCKER_HOST": "unix:///x.sock"}


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("unless-stopped", {"Name": "unless-stopped"}),
        ("on-failure:3", {"Name": "on-failure", "MaximumRetryCount": 3}),
        ("no", {"Name": "no"}),
    ],
)
def test_restart_policy(text, policy):
    assert restart_policy(text) == policy


def test_compose_override_file(tmp_path: Path):
    state = desired(
        env_body(
            mode="compose",
            image=None,
            compose=COMPOSE,
            routed_service="web",
            port=8080,
            env={"PRICE": "$5"},
        )
    )
    env = state.environments[0]
    action = ComposeUp(env.name, env, "h" * 64, state.routing, state.host)
    applier = Applier(object(), tmp_path, publish_host="127.0.0.1")
    override = applier.override_file(action, checked_compose(env))
    assert override["version"] == "3.8"
    web, db = override["services"]["web"], override["services"]["db"]
    for service in (web, db):
        assert service["labels"][lbl.ENVIRONMENT] == "hello"
        assert service["labels"][lbl.CONFIG_HASH] == "h" * 64
        assert service["labels"][lbl.ROLE] == lbl.ROLE_COMPOSE
        assert service["environment"] == {"PRICE": "$$5"}  # compose would interpolate "$"
    assert web["ports"] == ["127.0.0.1::8080"]
    assert "ports" not in db
    assert web["restart"] == "unless-stopped" and "restart" not in db
    assert web["labels"]["traefik.http.routers.hello.rule"] == "Host(`hello.example.com`)"
    assert not any(key.startswith("traefik.") for key in db["labels"])
    yaml.safe_dump(override)  # serialisable as written to disk


def test_other_compose_services_get_routes_of_their_own(tmp_path: Path):
    state = desired(
        env_body(
            mode="compose",
            image=None,
            compose=COMPOSE,
            routed_service="web",
            port=8080,
            routes=[{"service": "db", "port": 5432, "domains": ["db.hello.example.com"]}],
        )
    )
    env = state.environments[0]
    action = ComposeUp(env.name, env, "h" * 64, state.routing, state.host)
    applier = Applier(object(), tmp_path)
    override = applier.override_file(action, checked_compose(env))
    db = override["services"]["db"]["labels"]
    assert db["traefik.http.routers.hello-db.rule"] == "Host(`db.hello.example.com`)"
    assert db["traefik.http.services.hello-db.loadbalancer.server.port"] == "5432"
    web = override["services"]["web"]["labels"]
    assert web["traefik.http.routers.hello.rule"] == "Host(`hello.example.com`)"
    assert "networks" not in override  # no proxy network set: nothing joins one


PROXIED = """
services:
  web:
    image: 127.0.0.1:5001/a/web@sha256:{d}
  api:
    image: 127.0.0.1:5001/a/api@sha256:{d}
    networks: [back]
  db:
    image: 127.0.0.1:5001/a/db@sha256:{d}
    networks: [back]
networks:
  back: {{}}
""".format(d="1" * 64)


def test_routed_services_join_the_proxy_network_and_keep_their_own(tmp_path: Path):
    routes = [{"service": "api", "port": 8000, "domains": ["api.hello.example.com"]}]
    action = compose_action(PROXIED, port=8080, routes=routes)
    applier = Applier(object(), tmp_path, proxy_network="traefik_proxy")
    override = applier.override_file(action, checked_compose(action.spec))
    assert override["networks"] == {"portside-proxy": {"external": True, "name": "traefik_proxy"}}
    web, api, db = (override["services"][name] for name in ("web", "api", "db"))
    assert web["networks"] == {"default": {}, "portside-proxy": {}}
    assert api["networks"] == {"back": {}, "portside-proxy": {}}
    assert "networks" not in db
    for service in (web, api):
        assert service["labels"]["traefik.docker.network"] == "traefik_proxy"
    assert not any(key.startswith("traefik.") for key in db["labels"])

    # A file's own network by the agent's name would put its services on the proxy's.
    taken = PROXIED.replace("back", "portside-proxy")
    action = compose_action(taken, port=8080, routes=routes)
    with pytest.raises(EnvironmentRefused, match=r"networks\.portside-proxy: the agent"):
        applier.override_file(action, checked_compose(action.spec))


SANITISE = """
services:
  web:
    image: 127.0.0.1:5001/a/web@sha256:{d}
    labels:
      traefik.http.routers.x.rule: Host(`prod.example.com`)
      io.portside.environment: other
      app.example/keep: "1"
    ports: ["8080", "127.0.0.1:9000:9001/udp", {{target: 7000, protocol: tcp}}, 6000]
    expose: ["5000"]
    deploy:
      resources:
        limits: {{cpus: "0.5", memory: 64m, pids: 20}}
  db:
    image: 127.0.0.1:5001/a/db@sha256:{d}
    labels: ["com.docker.compose.project=other", "app.example/keep=2"]
    mem_limit: 32m
volumes:
  data:
    labels: {{traefik.enable: "true", app.example/v: "1"}}
""".format(d="1" * 64)


def test_the_agent_strips_routing_labels_and_published_ports_whatever_was_allowed():
    from contracts.yamlsafe import load_yaml

    document = sanitized_compose(load_yaml(SANITISE))
    web, db = document["services"]["web"], document["services"]["db"]
    assert web["labels"] == {"app.example/keep": "1"}
    assert db["labels"] == ["app.example/keep=2"]
    assert document["volumes"]["data"]["labels"] == {"app.example/v": "1"}
    assert "ports" not in web
    assert web["expose"] == ["5000", "8080", "9001/udp", "7000/tcp", 6000]
    assert "deploy" not in web
    assert (web["cpus"], web["mem_limit"], web["pids_limit"]) == (0.5, "64m", 20)
    assert db["mem_limit"] == "32m"


def test_routing_labels_are_stripped_in_any_case_and_with_blanks():
    """The policy refuses these keys; with ``labels`` allowed unchecked the agent must
    still strip them, by the same test."""
    document = {
        "services": {
            "web": {
                "labels": {
                    "Traefik.http.routers.x.rule": "Host(`prod.example.com`)",
                    " traefik.x": "1",
                    "IO.Portside.environment": "other",
                    "app.example/keep": "1",
                }
            },
            "db": {"labels": ["TRAEFIK.enable=true", " com.docker.compose.project=x", "a=b"]},
        }
    }
    services = sanitized_compose(document)["services"]
    assert services["web"]["labels"] == {"app.example/keep": "1"}
    assert services["db"]["labels"] == ["a=b"]


INTERPOLATING = """
services:
  web:
    image: 127.0.0.1:5001/a/web@sha256:{d}
    environment:
      LEAK: "${{HOME}} $DOCKER_HOST"
      PRICE: "$$5"
    command: ["sh", "-c", "echo $$PATH ${{PORTSIDE_TOKEN:-x}}"]
    labels: ["app.example/home=$HOME"]
    healthcheck: {{test: ["CMD", "true"], interval: "${{INTERVAL}}"}}
volumes:
  data:
    labels: {{app.example/v: "${{USER}}"}}
x-note: "$HOME"
""".format(d="1" * 64)


def test_compose_interpolates_nothing_from_the_agents_environment(tmp_path: Path):
    """Every ``$`` compose would substitute arrives doubled (literal); ``$$`` stays as it is,
    so it still means one ``$``; keys are not interpolated, so they stay."""
    action = compose_action(INTERPOLATING)
    text = dump_yaml(checked_compose(action.spec))
    document = yaml.safe_load(text)
    web = document["services"]["web"]
    assert web["environment"] == {"LEAK": "$${HOME} $$DOCKER_HOST", "PRICE": "$$5"}
    assert web["command"] == ["sh", "-c", "echo $$PATH $${PORTSIDE_TOKEN:-x}"]
    assert web["labels"] == ["app.example/home=$$HOME"]
    assert web["healthcheck"]["interval"] == "$${INTERVAL}"
    assert document["volumes"]["data"]["labels"] == {"app.example/v": "$${USER}"}
    assert document["x-note"] == "$$HOME"
    assert web["image"] == "127.0.0.1:5001/a/web@sha256:" + "1" * 64
    assert compose_images(document) == [web["image"]]


def compose_action(compose: str, **changes: Any) -> ComposeUp:
    state = desired(
        env_body(mode="compose", image=None, compose=compose, routed_service="web", **changes)
    )
    env = state.environments[0]
    return ComposeUp(env.name, env, "h" * 64, state.routing, state.host)


def test_limits_in_the_override_unless_the_file_sets_its_own():
    action = compose_action(COMPOSE, resources={"cpus": 2, "memory": "1g", "pids": 100})
    applier = Applier(object(), Path("/nonexistent"))
    override = applier.override_file(action, checked_compose(action.spec))
    for service in override["services"].values():
        assert (service["cpus"], service["mem_limit"], service["pids_limit"]) == (2.0, "1g", 100)
    own = COMPOSE.replace("restart: always", "restart: always\n    mem_limit: 256m")
    action = compose_action(own, resources={"cpus": 2, "memory": "1g", "pids": 100})
    override = applier.override_file(action, checked_compose(action.spec))
    assert "mem_limit" not in override["services"]["db"]
    assert override["services"]["web"]["mem_limit"] == "1g"


PREVIEW = """
services:
  web:
    image: 127.0.0.1:5001/a/web@sha256:{d}
  db:
    image: 127.0.0.1:5001/a/db@sha256:{d}
    cpus: 0.1
    mem_limit: 300m
  worker:
    image: 127.0.0.1:5001/a/web@sha256:{d}
    pids_limit: 10
""".format(d="1" * 64)


def test_a_previews_limits_are_a_budget_its_services_share():
    """Each service gets an equal share, or less if its file asks less: the preview as a
    whole never uses more than its limits (production's limits stay per container)."""
    resources = {"cpus": 1, "memory": "512m", "pids": 256}
    action = compose_action(PREVIEW, kind="preview", resources=resources)
    applier = Applier(object(), Path("/nonexistent"))
    override = applier.override_file(action, checked_compose(action.spec))
    limits = {
        name: (service["cpus"], service["mem_limit"], service["pids_limit"])
        for name, service in override["services"].items()
    }
    third = 512 * 1024 * 1024 // 3
    assert limits == {
        "web": (0.333, third, 85),
        "db": (0.1, third, 85),
        "worker": (0.333, third, 10),
    }
    assert sum(cpus for cpus, _, _ in limits.values()) <= 1
    assert sum(memory for _, memory, _ in limits.values()) <= 512 * 1024 * 1024
    assert sum(pids for _, _, pids in limits.values()) <= 256

    production = compose_action(PREVIEW, resources=resources)
    override = applier.override_file(production, checked_compose(production.spec))
    assert override["services"]["web"]["cpus"] == 1.0
    assert "cpus" not in override["services"]["db"]


def test_a_preview_budget_too_small_to_share_is_refused():
    action = compose_action(COMPOSE, kind="preview", resources={"cpus": 1, "memory": "10m"})
    applier = Applier(object(), Path("/nonexistent"))
    with pytest.raises(EnvironmentRefused, match=r"services: .*mem_limit budget of 10m"):
        applier.override_file(action, checked_compose(action.spec))


def test_a_compose_file_over_the_caps_is_refused():
    own = COMPOSE.replace("restart: always", "restart: always\n    mem_limit: 2g")
    action = compose_action(own, resources={"cpus": 2, "memory": "1g"})
    with pytest.raises(EnvironmentRefused, match=r"services\.db\.mem_limit"):
        checked_compose(action.spec)


def test_compose_runs_the_checked_text_from_sealed_memory(tmp_path: Path):
    seen: dict[str, Any] = {}

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        files = [command[i + 1] for i, arg in enumerate(command) if arg == "-f"]
        seen["texts"] = [Path(path).read_text() for path in files]
        seen["command"], seen["kwargs"] = command, kwargs
        # Sealed: nobody can change it any more.
        with pytest.raises(PermissionError), open(files[0], "a") as handle:
            handle.write("privileged: true")
        return subprocess.CompletedProcess(command, 0, "", "")

    applier = Applier(object(), tmp_path / "state", compose_command_override=["compose"], run=run)
    applier.run_compose("env-1", ["first: 1\n", "second: 2\n"], "config")
    assert seen["texts"] == ["first: 1\n", "second: 2\n"]
    command, kwargs = seen["command"], seen["kwargs"]
    empty = str(tmp_path / "state" / "empty")
    assert command[:5] == ["compose", "-p", "env-1", "--project-directory", empty]
    assert command[-1] == "config" and kwargs["cwd"] == empty
    assert [f"/dev/fd/{fd}" for fd in kwargs["pass_fds"]] == [command[6], command[8]]
    for fd in kwargs["pass_fds"]:  # closed again once compose ran
        with pytest.raises(OSError):
            os.fstat(fd)


def test_files_are_private_and_symlinks_are_never_followed(tmp_path: Path):
    root = tmp_path / "state"
    with open_dir(root, "compose", "env") as directory:
        write_file(directory, "a.yml", "text")
        assert read_file(directory, "a.yml") == "text"
        assert read_file(directory, "missing.yml") is None
        target = tmp_path / "target"
        target.write_text("precious")
        os.symlink(target, "link.yml", dir_fd=directory)
        with pytest.raises(UnsafePath):
            read_file(directory, "link.yml")
        write_file(directory, "link.yml", "new")  # replaces the link, not its target
    assert target.read_text() == "precious"
    assert stat.S_ISREG((root / "compose" / "env" / "link.yml").lstat().st_mode)
    assert stat.S_IMODE((root / "compose" / "env" / "a.yml").stat().st_mode) == 0o600
    (root / "evil").symlink_to(tmp_path)
    with pytest.raises(UnsafePath, match="cannot be opened safely"), open_dir(root, "evil"):
        pass
    for bad in ("..", "a/b", ""):
        with pytest.raises(UnsafePath), open_dir(root, bad):
            pass
