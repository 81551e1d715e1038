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
    "no services": ("version: '3'\n", "no services"),
    "list root": ("- a\n", "must be a mapping"),
    "context outside": ("services:\n  a:\n    build: ../..\n", "outside the repository"),
    "absolute context": ("services:\n  a:\n    build: /etc\n", "relative path"),
    "remote context": (
        "services:\n  a:\n    build: https://github.com/o/r.git\n",
        "remote build contexts",
    ),
    "missing context": ("services:\n  a:\n    build: nowhere\n", "not found"),
    "dockerfile outside": (
        "services:\n  a:\n    build:\n      context: .\n      dockerfile: ../../../etc/passwd\n",
        "outside the repository",
    ),
    "dockerfile symlink": (
        "services:\n  a:\n    build:\n      context: .\n      dockerfile: evil.Dockerfile\n",
        "outside the repository",
    ),
    "missing dockerfile": (
        "services:\n  a:\n    build:\n      context: .\n      dockerfile: nope\n",
        "not found",
    ),
    "include": ("include: [other.yml]\nservices:\n  a:\n    image: x\n", "include"),
    "extends file": (
        "services:\n  a:\n    extends:\n      file: ../other.yml\n      service: b\n",
        "extends",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_compose_files(tmp_path, case):
    text, message = BAD_FILES[case]
    workspace = write(tmp_path / "ws", {"compose.yaml": text, "Dockerfile": "FROM base\n"})
    os.symlink("/etc/passwd", workspace / "evil.Dockerfile")
    with pytest.raises(PermanentBuildError, match=message):
        load_compose(workspace)


PRIVILEGED = {
    "privileged": "privileged: true",
    "privileged yes": "privileged: 'yes'",
    "network host": "network_mode: host",
    "pid host": "pid: host",
    "ipc host": "ipc: host",
    "interpolated": "network_mode: ${MODE}",
    "sys_admin": "cap_add: [SYS_ADMIN]",
    "cap all": "cap_add: [ALL]",
    "cap prefix": "cap_add: [CAP_SYS_ADMIN]",
    "devices": "devices: ['/dev/kvm:/dev/kvm']",
    "seccomp": "security_opt: ['seccomp:unconfined']",
    "docker socket": "volumes: ['/var/run/docker.sock:/var/run/docker.sock']",
    "home bind": "volumes: ['~/.ssh:/root/.ssh:ro']",
    "parent bind": "volumes: ['../secrets:/s']",
    "symlink bind": "volumes: ['./escape:/e']",
    "long bind": "volumes: [{type: bind, source: /etc, target: /e}]",
    "env_file": "env_file: /etc/shadow",
}


@pytest.mark.parametrize("case", PRIVILEGED, ids=list(PRIVILEGED))
def test_host_powers_are_refused_unless_allowed(tmp_path, case):
    text = f"services:\n  app:\n    image: x\n    {PRIVILEGED[case]}\n"
    workspace = write(tmp_path / "ws", {"compose.yaml": text})
    os.symlink("/etc", workspace / "escape")
    with pytest.raises(PermanentBuildError, match=r"app: .* not allowed"):
        load_compose(workspace)
    assert load_compose(workspace, allow_privileged=True) is not None


@pytest.mark.parametrize(
    "text",
    [
        "secrets:\n  s:\n    file: /etc/shadow\n",
        "configs:\n  c:\n    file: ../../x\n",
        "volumes:\n  v:\n    driver_opts: {type: none, o: bind, device: /etc}\n",
    ],
)
def test_top_level_host_files_are_refused(tmp_path, text):
    workspace = write(tmp_path, {"compose.yaml": "services:\n  app:\n    image: x\n" + text})
    with pytest.raises(PermanentBuildError, match="outside the project directory"):
        load_compose(workspace)


def test_harmless_service_passes(tmp_path):
    write(
        tmp_path,
        {
            "compose.yaml": """\
                services:
                  app:
                    image: x
                    cap_add: [NET_BIND_SERVICE]
                    network_mode: bridge
                    env_file: .env
                    volumes:
                      - data:/data
                      - ./config:/config:ro
                      - /anonymous
                      - {type: volume, source: data, target: /more}
                volumes:
                  data: {}
                """
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
