"""The compose allow-list: each attack from issue 14 refused with its path; real files pass."""

from __future__ import annotations

import textwrap

import pytest

from contracts.compose_policy import (
    Caps,
    ComposeRefused,
    Violation,
    check_compose,
    load_and_check,
    parse_memory,
)
from contracts.yamlsafe import load_yaml


def service(body: str, extra: str = "") -> str:
    """A file with one service ``app`` whose keys are ``body``, plus top-level ``extra``."""
    indented = textwrap.indent(textwrap.dedent(body), "    ")
    return f"services:\n  app:\n    image: x\n{indented}" + textwrap.dedent(extra)


def paths(text: str, **kwargs) -> set[str]:
    return {v.path for v in check_compose(load_yaml(text), **kwargs)}


# One case per attack: the compose text and the key path that must be named.
REFUSED = {
    "cap_add SYS_MODULE": (service("cap_add: [SYS_MODULE]\n"), "services.app.cap_add"),
    "privileged": (service("privileged: true\n"), "services.app.privileged"),
    "device cgroup rules": (
        service("device_cgroup_rules: ['b *:* rwm']\n"),
        "services.app.device_cgroup_rules",
    ),
    "devices": (service("devices: ['/dev/sda:/dev/sda']\n"), "services.app.devices"),
    "pid of a container": (service("pid: container:prod-web-1\n"), "services.app.pid"),
    "ipc of a container": (service("ipc: container:prod-web-1\n"), "services.app.ipc"),
    "network_mode of a container": (
        service("network_mode: container:prod-web-1\n"),
        "services.app.network_mode",
    ),
    "network_mode host": (service("network_mode: host\n"), "services.app.network_mode"),
    "volumes_from": (
        service("volumes_from: ['container:prod-db-1']\n"),
        "services.app.volumes_from",
    ),
    "userns_mode": (service("userns_mode: host\n"), "services.app.userns_mode"),
    "cgroup_parent": (service("cgroup_parent: /\n"), "services.app.cgroup_parent"),
    "security_opt": (
        service("security_opt: ['seccomp:unconfined']\n"),
        "services.app.security_opt",
    ),
    "sysctls": (service("sysctls: {net.ipv4.ip_forward: 1}\n"), "services.app.sysctls"),
    "ulimits": (service("ulimits: {nofile: 1000000}\n"), "services.app.ulimits"),
    "container_name": (service("container_name: prod-web-1\n"), "services.app.container_name"),
    "logging": (service("logging: {driver: syslog}\n"), "services.app.logging"),
    "links": (service("external_links: ['prod-db-1:db']\n"), "services.app.external_links"),
    "service secrets": (service("secrets: [s]\n"), "services.app.secrets"),
    "external volume": (
        service("volumes: ['db:/var/lib/postgresql/data']\n", "volumes:\n  db: {external: true}\n"),
        "volumes.db.external",
    ),
    "custom-named volume": (
        service("volumes: ['db:/d']\n", "volumes:\n  db: {name: prod_db_data}\n"),
        "volumes.db.name",
    ),
    "custom-named network": (
        service("networks: [cp]\n", "networks:\n  cp: {name: portside_default}\n"),
        "networks.cp.name",
    ),
    "external network": (
        service("networks: [cp]\n", "networks:\n  cp: {external: true}\n"),
        "networks.cp.external",
    ),
    "NFS driver_opts": (
        service(
            "volumes: ['nfs:/n']\n",
            "volumes:\n  nfs:\n    driver: local\n"
            "    driver_opts: {type: nfs, o: 'addr=10.0.0.1', device: ':/export'}\n",
        ),
        "volumes.nfs.driver_opts",
    ),
    "network driver": (
        service("", "networks:\n  n: {driver: macvlan}\n"),
        "networks.n.driver",
    ),
    "ipam": (
        service("", "networks:\n  n: {ipam: {config: [{subnet: 10.0.0.0/8}]}}\n"),
        "networks.n.ipam",
    ),
    "relative bind of .": (service("volumes: ['.:/app']\n"), "services.app.volumes[0]"),
    "absolute bind": (service("volumes: ['/:/host']\n"), "services.app.volumes[0]"),
    "docker socket": (
        service("volumes: ['/var/run/docker.sock:/var/run/docker.sock']\n"),
        "services.app.volumes[0]",
    ),
    "home bind": (service("volumes: ['~/.ssh:/k']\n"), "services.app.volumes[0]"),
    "variable bind": (service("volumes: ['${HOME}:/h']\n"), "services.app.volumes[0]"),
    "long bind": (
        service("volumes: [{type: bind, source: ., target: /app}]\n"),
        "services.app.volumes[0].type",
    ),
    "long volume with bind options": (
        service(
            "volumes: [{type: volume, source: v, target: /v, bind: {propagation: shared}}]\n",
            "volumes:\n  v:\n",
        ),
        "services.app.volumes[0].bind",
    ),
    "undeclared named volume": (service("volumes: ['prod_db:/d']\n"), "services.app.volumes[0]"),
    "traefik labels": (
        service("labels: {traefik.http.routers.x.rule: 'Host(`prod.example.com`)'}\n"),
        "services.app.labels.traefik.http.routers.x.rule",
    ),
    "traefik labels as a list, upper case": (
        service("labels: ['Traefik.http.routers.x.priority=1000']\n"),
        "services.app.labels[0]",
    ),
    "portside labels": (
        service("labels: {io.portside.environment: prod}\n"),
        "services.app.labels.io.portside.environment",
    ),
    "compose labels": (
        service("labels: {com.docker.compose.project: prod}\n"),
        "services.app.labels.com.docker.compose.project",
    ),
    "volume routing labels": (
        service("", "volumes:\n  v: {labels: {com.docker.compose.project: prod}}\n"),
        "volumes.v.labels.com.docker.compose.project",
    ),
    "top-level configs": (service("", "configs:\n  c: {file: /etc/shadow}\n"), "configs"),
    "service configs": (service("configs: [c]\n"), "services.app.configs"),
    "top-level secrets": (service("", "secrets:\n  s: {file: /etc/shadow}\n"), "secrets"),
    "include": ("include: [../other/compose.yaml]\n" + service(""), "include"),
    "project name": ("name: prod\n" + service(""), "name"),
    "extends another file": (
        service("extends: {file: ../../other.yml, service: b}\n"),
        "services.app.extends.file",
    ),
    "host port": (service("ports: ['8080:80']\n"), "services.app.ports[0]"),
    "host address": (service("ports: ['0.0.0.0::80']\n"), "services.app.ports[0]"),
    "22:22 as YAML 1.1 would read it": (service("ports: [22:22]\n"), "services.app.ports[0]"),
    "long published port": (
        service("ports: [{target: 80, published: 8080}]\n"),
        "services.app.ports[0].published",
    ),
    "long host_ip": (
        service("ports: [{target: 80, host_ip: 0.0.0.0}]\n"),
        "services.app.ports[0].host_ip",
    ),
    "expose scalar": (service("expose: 80\n"), "services.app.expose"),
    "ports scalar": (service("ports: 80\n"), "services.app.ports"),
    "service name with a space": ("services:\n  'my app':\n    image: x\n", "services.my app"),
    "service name with a dot": ("services:\n  a.b:\n    image: x\n", "services.a.b"),
    "service not a mapping": ("services:\n  app: [image, x]\n", "services.app"),
    "no services": ("services: {}\n", "services"),
    "not a mapping": ("- services\n", "(file)"),
    "remote build context": (
        service("build: https://github.com/evil/repo.git#main\n"),
        "services.app.build",
    ),
    "git build context": (
        service("build: {context: 'git@github.com:evil/r.git'}\n"),
        "services.app.build.context",
    ),
    "build context outside": (service("build: ../..\n"), "services.app.build"),
    "absolute build context": (service("build: {context: /}\n"), "services.app.build.context"),
    "dockerfile outside": (
        service("build: {context: ., dockerfile: ../../etc/Dockerfile}\n"),
        "services.app.build.dockerfile",
    ),
    "dockerfile_inline": (
        service("build: {context: ., dockerfile_inline: 'FROM prod-web:main'}\n"),
        "services.app.build.dockerfile_inline",
    ),
    "build network": (
        service("build: {context: ., network: host}\n"),
        "services.app.build.network",
    ),
    "build additional_contexts": (
        service("build: {context: ., additional_contexts: {p: 'docker-image://prod'}}\n"),
        "services.app.build.additional_contexts",
    ),
    "build ssh": (service("build: {context: ., ssh: [default]}\n"), "services.app.build.ssh"),
    "build secrets": (service("build: {context: ., secrets: [s]}\n"), "services.app.build.secrets"),
    "env_file absolute": (service("env_file: /etc/shadow\n"), "services.app.env_file"),
    "env_file outside": (
        service("env_file: [{path: ../../.env}]\n"),
        "services.app.env_file[0].path",
    ),
    "undeclared network": (service("networks: [portside]\n"), "services.app.networks.portside"),
    "network static address": (
        service("networks: {n: {ipv4_address: 10.0.0.2}}\n", "networks:\n  n:\n"),
        "services.app.networks.n.ipv4_address",
    ),
    "profiles": (service("profiles: [debug]\n"), "services.app.profiles"),
    "scale": (service("scale: 50\n"), "services.app.scale"),
    "deploy replicas": (service("deploy: {replicas: 50}\n"), "services.app.deploy.replicas"),
    "deploy device reservations": (
        service("deploy: {resources: {reservations: {devices: [{capabilities: [gpu]}]}}}\n"),
        "services.app.deploy.resources.reservations",
    ),
    "runtime": (service("runtime: runc\n"), "services.app.runtime"),
    "oom_score_adj": (service("oom_score_adj: -1000\n"), "services.app.oom_score_adj"),
    "unknown pull policy": (service("pull_policy: sometimes\n"), "services.app.pull_policy"),
    "mount of an image": (
        service("volumes: [{type: image, source: 'prod-web:main', target: /p}]\n"),
        "services.app.volumes[0].type",
    ),
    "depends on nothing": (service("depends_on: [ghost]\n"), "services.app.depends_on.ghost"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_each_attack_is_refused_with_its_key_path(case):
    text, path = REFUSED[case]
    assert path in paths(text)
    with pytest.raises(ComposeRefused) as raised:
        load_and_check(text)
    assert path in str(raised.value)


def test_every_violation_is_reported_at_once():
    text = service("cap_add: [SYS_ADMIN]\npid: host\nvolumes: ['/:/h']\n", "name: x\n")
    assert paths(text) == {
        "name",
        "services.app.cap_add",
        "services.app.pid",
        "services.app.volumes[0]",
    }


def test_a_yaml_problem_is_a_violation_of_the_file():
    with pytest.raises(ComposeRefused) as raised:
        load_and_check("a: &a [x]\n" + "".join(f"b{i}: *a\n" for i in range(101)))
    assert raised.value.violations == (Violation("(file)", "more than 100 YAML aliases"),)
    assert str(raised.value).startswith("compose file refused: (file): ")


@pytest.mark.parametrize(
    "document",
    [
        {"services": {"app": {"expose": {"a": 1}, "volumes": "x", "ports": [None], "env_file": 3}}},
        {"services": {"app": {"labels": 5, "networks": 5, "healthcheck": [], "deploy": []}}},
        {"services": {1: {"image": "x"}, "b": None}, "volumes": [], "networks": "n"},
        {"services": {"app": {"build": 5, "depends_on": 5, "extends": 5, 7: "x"}}},
        {"services": {"app": {"deploy": {"resources": {"limits": {"cpus": "x", "memory": []}}}}}},
        {"services": None, 5: 5},
    ],
)
def test_malformed_files_are_violations_not_exceptions(document):
    assert check_compose(document)


def test_extra_allowed_keys_pass_for_every_service_of_the_file():
    text = (
        "services:\n"
        "  app: {image: x, cap_add: [NET_ADMIN], privileged: true}\n"
        "  other: {image: y, cap_add: [X]}\n"
    )
    assert paths(text) == {
        "services.app.cap_add",
        "services.app.privileged",
        "services.other.cap_add",
    }
    assert paths(text, extra_allowed=frozenset({"cap_add", "privileged"})) == set()
    assert paths(text, extra_allowed=frozenset({"cap_add"})) == {"services.app.privileged"}


CAPS = Caps(cpus=1.0, memory_bytes=512 * 1024 * 1024, pids=256)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("cpus: 2\n", "services.app.cpus"),
        ("mem_limit: 1g\n", "services.app.mem_limit"),
        ("pids_limit: -1\n", "services.app.pids_limit"),
        ("pids_limit: 1000\n", "services.app.pids_limit"),
        (
            "deploy: {resources: {limits: {cpus: '1.5'}}}\n",
            "services.app.deploy.resources.limits.cpus",
        ),
        (
            "deploy: {resources: {limits: {memory: 600M}}}\n",
            "services.app.deploy.resources.limits.memory",
        ),
        (
            "deploy: {resources: {limits: {pids: 257}}}\n",
            "services.app.deploy.resources.limits.pids",
        ),
    ],
)
def test_resource_limits_above_the_caps_are_refused(body, path):
    text = service(body)
    assert paths(text, caps=CAPS) == {path}
    assert path not in paths(text)  # no caps: any limit goes (the agent adds its defaults)


def test_limits_within_the_caps_pass():
    text = service(
        "cpus: 0.5\nmem_limit: 512m\npids_limit: 256\n"
        "deploy: {resources: {limits: {cpus: '1', memory: 256MiB, pids: 100}}}\n"
    )
    assert paths(text, caps=CAPS) == set()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("512m", 512 << 20),
        ("1.5GiB", 3 << 29),
        ("100", 100),
        (1024, 1024),
        ("2 gb", 2 << 30),
        ("x", None),
        (True, None),
    ],
)
def test_parse_memory(value, expected):
    assert parse_memory(value) == expected


WEB_AND_WORKER = """\
x-app: &app
  build: .
  environment:
    DATABASE_URL: postgres://db/app
    FLAG: on
  env_file: [.env.defaults, {path: config/.env, required: false}]
  restart: unless-stopped
services:
  web:
    <<: *app
    command: gunicorn app:wsgi -b 0.0.0.0:8000
    expose: [8000]
    ports: ["8000", 8001, "9000/udp", {target: 8002, protocol: tcp}]
    healthcheck:
      test: [CMD, curl, -f, http://localhost:8000/health]
      interval: 10s
      retries: 3
    labels: {com.example.team: web, org.opencontainers.image.title: web}
  worker:
    <<: *app
    command: ["celery", "-A", "app", "worker"]
    depends_on: [web]
    stop_grace_period: 1m
    stop_signal: SIGTERM
"""

FRONTEND_API_DB = """\
version: "3.9"
services:
  frontend:
    build:
      context: ./frontend
      dockerfile: ../docker/frontend.Dockerfile
      args: {NODE_ENV: production}
      target: runtime
    expose: ["3000"]
    depends_on:
      api: {condition: service_healthy}
    read_only: true
    tmpfs: [/tmp, "/run:size=64m"]
    user: "1000:1000"
    init: true
  api:
    build: {context: api}
    expose: ["8080"]
    working_dir: /srv
    entrypoint: /srv/start.sh
    healthcheck: {test: "curl -f http://localhost:8080/", interval: 5s, start_period: 30s}
    networks: [backend, default]
    deploy: {resources: {limits: {cpus: "0.5", memory: 256m, pids: 100}}}
    extra_hosts: ["api.local:127.0.0.1"]
    shm_size: 64m
    hostname: api
  db:
    image: postgres:16
    pull_policy: if_not_present
    environment: [POSTGRES_PASSWORD=example]
    volumes:
      - pgdata:/var/lib/postgresql/data
      - /var/lib/anonymous
      - {type: volume, source: backups, target: /backups, read_only: true, volume: {nocopy: true}}
      - {type: tmpfs, target: /scratch, tmpfs: {size: 1000000}}
      - cache:/cache:ro
    networks:
      backend: {aliases: [database]}
    x-notes: anything goes under x-
volumes:
  pgdata:
  backups: {}
  cache: {labels: {com.example.purpose: cache}}
networks:
  backend: {internal: true}
x-deploy-notes: {owner: platform}
"""


@pytest.mark.parametrize(
    "text", [WEB_AND_WORKER, FRONTEND_API_DB], ids=["web+worker", "frontend/api/db"]
)
def test_realistic_files_pass(text):
    assert check_compose(load_yaml(text), caps=Caps(cpus=2, memory_bytes=1 << 30, pids=512)) == ()
    assert load_and_check(text)["services"]
