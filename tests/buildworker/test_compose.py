"""Compose detection, parsing, refusal of host powers, and digest pinning."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from buildworker.compose import (
    BuildSpec,
    find_compose_file,
    load_compose,
    pin_images,
    plan_builds,
)
from buildworker.errors import PermanentBuildError

DIGEST = "sha256:" + "ab" * 32


def write(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
    return root


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["docker-compose.yml", "compose.yaml"], "compose.yaml"),
        (["docker-compose.yml", "compose.yml"], "compose.yml"),
        (["docker-compose.yml", "docker-compose.yaml"], "docker-compose.yaml"),
        (["docker-compose.yml"], "docker-compose.yml"),
        (["Dockerfile"], None),
    ],
)
def test_default_compose_file_order(tmp_path, names, expected):
    write(tmp_path, dict.fromkeys(names, "services: {}\n"))
    found = find_compose_file(tmp_path)
    assert (found.name if found else None) == expected


@pytest.mark.parametrize(
    "compose_path",
    ["/etc/passwd", "../outside.yml", "deploy/../../x.yml", "missing.yml", "link.yml"],
)
def test_given_compose_path_is_refused(tmp_path, compose_path):
    workspace = tmp_path / "ws"
    write(tmp_path, {"outside.yml": "services: {}\n", "ws/ok.yml": "services: {}\n"})
    os.symlink(tmp_path / "outside.yml", workspace / "link.yml")
    with pytest.raises(PermanentBuildError):
        find_compose_file(workspace, compose_path)


def test_given_compose_path_in_a_subdirectory(tmp_path):
    write(tmp_path, {"deploy/stack.yml": "services: {}\n"})
    assert (
        find_compose_file(tmp_path, "deploy/stack.yml") == (tmp_path / "deploy/stack.yml").resolve()
    )


def test_builds_listed_with_string_and_mapping_forms(tmp_path):
    write(
        tmp_path,
        {
            "compose.yaml": """\
                x-portside: {route: web}
                services:
                  web:
                    build: .
                  worker:
                    build:
                      context: ./worker
                      dockerfile: ../docker/worker.Dockerfile
                      args:
                        VERSION: 1.0
                        DEBUG: false
                        EMPTY:
                      target: prod
                  listed:
                    build:
                      context: worker
                      args: ["A=1", "B", "C=x=y"]
                  db:
                    image: postgres:16
                """,
            "Dockerfile": "FROM base\n",
            "worker/Dockerfile": "FROM base\n",
            "docker/worker.Dockerfile": "FROM base\n",
        },
    )
    project = load_compose(tmp_path)
    assert project is not None
    assert project.services == ("web", "worker", "listed", "db")
    assert project.routed_service == "web"
    root = tmp_path.resolve()
    assert project.builds == (
        BuildSpec("web", root, "Dockerfile"),
        BuildSpec(
            "worker",
            root / "worker",
            "../docker/worker.Dockerfile",
            {"VERSION": "1.0", "DEBUG": "false"},
            "prod",
        ),
        BuildSpec("listed", root / "worker", "Dockerfile", {"A": "1", "C": "x=y"}),
    )


def test_the_routed_service_is_the_one_published_with_ports(tmp_path):
    write(
        tmp_path,
        {
            "compose.yaml": "services:\n  api:\n    build: .\n    expose: ['9000']\n"
            "  frontend:\n    build: .\n    ports: ['3000']\n",
            "Dockerfile": "FROM base\n",
        },
    )
    plan = plan_builds(tmp_path)
    assert plan.compose is not None and plan.compose.routed_service == "frontend"


def test_a_compose_file_that_leaves_the_route_open_fails_the_build(tmp_path):
    write(
        tmp_path,
        {
            "compose.yaml": "services:\n  api:\n    build: .\n    ports: ['9000']\n"
            "  frontend:\n    build: .\n    ports: ['3000']\n",
            "Dockerfile": "FROM base\n",
        },
    )
    with pytest.raises(PermanentBuildError, match=r"\(api, frontend\).*x-portside: \{route:"):
        plan_builds(tmp_path)


def test_plan_without_compose_uses_the_root_dockerfile(tmp_path):
    write(tmp_path, {"Dockerfile": "FROM base\n"})
    plan = plan_builds(tmp_path)
    assert plan.compose is None
    assert plan.builds == (BuildSpec(None, tmp_path.resolve(), "Dockerfile"),)


def test_plan_without_anything_to_build(tmp_path):
    with pytest.raises(PermanentBuildError, match="neither a Dockerfile nor a compose file"):
        plan_builds(tmp_path)


BAD_FILES = {
    "not yaml": ("services: [\n", "not valid YAML"),
    "no services": ("version: '3'\n", "services: a compose file needs"),
    "list root": ("- a\n", "must be a mapping"),
    "alias bomb": (
        "a: &a [x]\n" + "".join(f"x-b{i}: *a\n" for i in range(101)) + "services: {}\n",
        r"\(file\): more than 100 YAML aliases",
    ),
    "context outside": ("services:\n  a:\n    build: ../..\n", "services.a.build: "),
    "absolute context": ("services:\n  a:\n    build: /etc\n", "services.a.build: "),
    "remote context": (
        "services:\n  a:\n    build: https://github.com/o/r.git\n",
        "services.a.build: .* not a URL",
    ),
    "missing context": ("services:\n  a:\n    build: nowhere\n", "not found"),
    "context symlink": (
        "services:\n  a:\n    build: escape\n",
        "services.a.build.context 'escape' points outside the repository",
    ),
    "dockerfile outside": (
        "services:\n  a:\n    build:\n      context: .\n      dockerfile: ../../../etc/passwd\n",
        "services.a.build.dockerfile: ",
    ),
    "dockerfile symlink": (
        "services:\n  a:\n    build:\n      context: .\n      dockerfile: evil.Dockerfile\n",
        "services.a.build.dockerfile 'evil.Dockerfile' points outside the repository",
    ),
    "missing dockerfile": (
        "services:\n  a:\n    build:\n      context: .\n      dockerfile: nope\n",
        "not found",
    ),
    "env_file symlink": (
        "services:\n  a:\n    image: x\n    env_file: [ok.env, {path: escape/shadow}]\n",
        r"services.a.env_file\[1\] 'escape/shadow' points outside the repository",
    ),
    "include": ("include: [other.yml]\nservices:\n  a:\n    image: x\n", "include: not allowed"),
    "extends file": (
        "services:\n  a:\n    extends:\n      file: ../other.yml\n      service: b\n",
        "services.a.extends.file",
    ),
    "configs": (
        "services:\n  a:\n    image: x\n    configs: [c]\nconfigs:\n  c: {file: /etc/shadow}\n",
        "configs: not allowed.*services.a.configs: not allowed",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_compose_files(tmp_path, case):
    text, message = BAD_FILES[case]
    workspace = write(tmp_path / "ws", {"compose.yaml": text, "Dockerfile": "FROM base\n"})
    os.symlink("/etc/passwd", workspace / "evil.Dockerfile")
    os.symlink("/etc", workspace / "escape")
    with pytest.raises(PermanentBuildError, match=message):
        load_compose(workspace)


def test_a_compose_file_that_is_a_symlink_out_is_refused(tmp_path):
    write(tmp_path, {"outside/compose.yaml": "services:\n  a:\n    image: x\n"})
    workspace = tmp_path / "ws"
    workspace.mkdir()
    os.symlink(tmp_path / "outside" / "compose.yaml", workspace / "compose.yaml")
    with pytest.raises(PermanentBuildError, match="points outside the repository"):
        load_compose(workspace)
    os.symlink("/nonexistent", workspace / "compose.yml")  # a dangling link is no fallback
    (workspace / "compose.yaml").unlink()
    with pytest.raises(PermanentBuildError, match="points outside the repository"):
        load_compose(workspace)


PRIVILEGED = {
    "privileged": ("privileged: true", "services.app.privileged"),
    "network host": ("network_mode: host", "services.app.network_mode"),
    "pid of a container": ("pid: container:prod-web-1", "services.app.pid"),
    "cap_add": ("cap_add: [SYS_MODULE]", "services.app.cap_add"),
    "devices": ("devices: ['/dev/kvm:/dev/kvm']", "services.app.devices"),
    "device cgroup rules": (
        "device_cgroup_rules: ['b *:* rwm']",
        "services.app.device_cgroup_rules",
    ),
    "seccomp": ("security_opt: ['seccomp:unconfined']", "services.app.security_opt"),
    "docker socket": (
        "volumes: ['/var/run/docker.sock:/var/run/docker.sock']",
        r"services.app.volumes\[0\]",
    ),
    "relative bind": ("volumes: ['.:/app']", r"services.app.volumes\[0\]"),
}


@pytest.mark.parametrize("case", PRIVILEGED, ids=list(PRIVILEGED))
def test_host_powers_are_refused_unless_allowed(tmp_path, case):
    line, path = PRIVILEGED[case]
    text = f"services:\n  app:\n    image: x\n    {line}\n"
    workspace = write(tmp_path / "ws", {"compose.yaml": text})
    with pytest.raises(PermanentBuildError, match=f"compose file refused: {path}: "):
        load_compose(workspace)
    key = line.partition(":")[0]
    assert load_compose(workspace, extra_allowed=frozenset({key})) is not None
    with pytest.raises(PermanentBuildError):
        load_compose(workspace, extra_allowed=frozenset({"something_else"}))


def test_every_refused_key_path_is_in_the_error(tmp_path):
    text = "services:\n  app:\n    image: x\n    cap_add: [X]\n    pid: host\n"
    workspace = write(tmp_path, {"compose.yaml": text + "volumes:\n  v: {external: true}\n"})
    with pytest.raises(PermanentBuildError) as raised:
        load_compose(workspace)
    for path in ("services.app.cap_add", "services.app.pid", "volumes.v.external"):
        assert path in str(raised.value)


def test_harmless_service_passes(tmp_path):
    write(
        tmp_path,
        {
            "compose.yaml": """\
                services:
                  app:
                    image: x
                    env_file: [.env, {path: config/app.env, required: false}]
                    expose: [8000]
                    ports: ["8000"]
                    volumes:
                      - data:/data
                      - /anonymous
                      - {type: volume, source: data, target: /more}
                      - {type: tmpfs, target: /tmp}
                volumes:
                  data: {}
                """,
            ".env": "A=1\n",
        },
    )
    assert load_compose(tmp_path) is not None


def test_pin_images_sets_digests_and_drops_build():
    text = textwrap.dedent(
        """\
        x-common: &common
          restart: unless-stopped
        services:
          web:
            <<: *common
            build: .
            pull_policy: build
            ports: ["8080:80", 22:22]
            environment:
              FLAG: on
          worker: &worker
            build: {context: worker}
            image: old/name
          db:
            image: postgres:16
        """
    )
    pinned = yaml.safe_load(
        pin_images(text, {"web": f"reg/o/r-web@{DIGEST}", "worker": f"reg/o/r-worker@{DIGEST}"})
    )
    services = pinned["services"]
    assert services["web"]["image"] == f"reg/o/r-web@{DIGEST}"
    assert services["worker"] == {"image": f"reg/o/r-worker@{DIGEST}"}
    assert "build" not in services["web"]
    assert "pull_policy" not in services["web"]
    assert services["db"] == {"image": "postgres:16"}
    assert services["web"]["restart"] == "unless-stopped"
    # YAML 1.1 would have turned these into 1342 and True; compose reads them as strings.
    assert services["web"]["ports"] == ["8080:80", "22:22"]
    assert services["web"]["environment"] == {"FLAG": "on"}


@pytest.mark.parametrize("images", [{"nope": f"r@{DIGEST}"}, {"web": "reg/o/r:latest"}])
def test_pin_images_refuses_unknown_service_or_tag(images):
    with pytest.raises(ValueError):
        pin_images("services:\n  web:\n    build: .\n", images)
