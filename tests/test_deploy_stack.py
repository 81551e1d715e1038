"""The control-plane part of ``deploy/compose.yaml``, started on the test engine.

``docker-compose`` runs the compose file as written, plus an override of the test's own
(written beside the secrets in a temporary directory) that changes only what this machine
needs, each for a reason:

- Nothing can be pulled. The Portside image is built from the repository's Dockerfile with
  ``PYTHON_IMAGE`` set to a Debian bookworm base made here (``debootstrap``, Python 3.11,
  pip, venv, git, PostgreSQL and Redis, the host's CA bundle so that pip reaches the
  package index through this machine's egress), kept under a tag of the test's own across
  runs: no global ``python:3.11-slim`` is claimed. ``postgres:16`` and ``redis:7`` are
  replaced, through the override's ``image``/``build`` of those two services, by stand-ins
  built FROM that base (tests/deploy_stack/) that keep the originals' contracts the
  compose file relies on: ``POSTGRES_*`` with the password read from its secret as the
  postgres user, ``docker-entrypoint.sh redis-server`` dropping to the redis user,
  ``pg_isready`` and ``redis-cli`` for the health checks.
- The engine runs without iptables, so builds use the host's network (``build.network``)
  to reach the Debian mirror and the package index.
- The host ports (Redis, Flower, web published on loopback so the test can reach it), the
  proxy network's name and the image tags are the test's own, so nothing collides with the
  host's Redis on 6379 or with another test on the engine.

Traefik cannot be installed here: it is not started (``docker-compose config`` in
tests/test_deploy.py still checks it); web is reached on a published port instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import redis
import requests
import yaml
from celery import Celery
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fixtures.docker import TEST_LABELS, unavailable
from tests.support.live import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
STAND_INS = Path(__file__).resolve().parent / "deploy_stack"
# No io.portside label: docker_cleanup must keep it, so a machine builds it once.
PYTHON_BASE = "portside-test/python-bookworm:3.11"
BASE_PACKAGES = "python3,python3-pip,python3-venv,git,ca-certificates,postgresql,redis-server"
PORTSIDE_SERVICES = ("migrate", "web", "worker", "beat", "flower")
STARTED = (*PORTSIDE_SERVICES, "postgres", "redis")
SECRET_NAMES = (
    "database_url",
    "redis_url",
    "redis_password",
    "metrics_token",
    "postgres_password",
    "secret_key",
    "webhook_secret",
    "github_private_key",
)


def _run(command: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result


def _make_python_base(client: docker.DockerClient) -> None:
    """Debootstrap bookworm and import it as ``PYTHON_BASE``, shaped like python:3.11-slim
    where the Dockerfile relies on it (``pip`` and ``python`` on PATH, pip allowed to
    install into the system's Python)."""
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        unavailable(f"{PYTHON_BASE} is missing and making it needs root and debootstrap")
    mirror = os.environ.get("PORTSIDE_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    with tempfile.TemporaryDirectory(prefix="portside-base-") as work:
        root = Path(work) / "root"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "bookworm",
                str(root),
                mirror,
            ],
            timeout=1800,
        )
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        for name, target in (("python", "/usr/bin/python3"), ("pip", "/usr/bin/pip3")):
            (root / "usr/local/bin" / name).symlink_to(target)
        shutil.copyfile(
            "/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt"
        )
        # debootstrap leaves its .deb files; documentation is not needed either.
        for cache in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(root / cache, ignore_errors=True)
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "--numeric-owner", "-cf", "-", "."], stdout=subprocess.PIPE
        )
        _run(
            [
                "docker",
                "import",
                "-c",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "-c",
                'CMD ["python3"]',
                "-m",
                "Portside test: Debian bookworm with Python 3.11, pip, git, PostgreSQL, Redis",
                "-",
                PYTHON_BASE,
            ],
            timeout=1800,
            stdin=tar.stdout,
        )
        assert tar.wait(60) == 0
    client.images.get(PYTHON_BASE)


@pytest.fixture(scope="module")
def python_base(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.images.get(PYTHON_BASE)
    except docker.errors.ImageNotFound:
        _make_python_base(docker_client)
    return PYTHON_BASE


def _write_secrets(directory: Path) -> dict[str, str]:
    """The secrets as the compose file's header makes them; returns their values."""
    directory.mkdir(mode=0o700)
    postgres_password = os.urandom(16).hex()
    redis_password = os.urandom(24).hex()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    values = {
        "database_url": f"postgresql://portside:{postgres_password}@postgres/portside",
        "postgres_password": postgres_password,
        "redis_password": redis_password,
        "redis_url": f"redis://:{redis_password}@redis:6379/0",
        "secret_key": os.urandom(32).hex(),
        "webhook_secret": os.urandom(20).hex(),
        "metrics_token": os.urandom(24).hex(),
        "github_private_key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode(),
    }
    for name, value in values.items():
        path = directory / name
        path.write_text(value + "\n")
        # Readable inside the containers (their users are not root); the directory (700)
        # keeps them from the host's other users.
        path.chmod(0o644)
    return values


def _override(project: str, secrets: Path, ports: dict[str, int]) -> dict[str, Any]:
    portside_image = f"portside-test/deploy-portside:{project}"
    services: dict[str, Any] = {
        name: {
            "image": portside_image,
            "build": {
                "context": str(ROOT),
                "network": "host",
                "args": {"PYTHON_IMAGE": PYTHON_BASE},
                "labels": dict(TEST_LABELS),
            },
        }
        for name in PORTSIDE_SERVICES
    }
    services["web"]["ports"] = [f"127.0.0.1:{ports['web']}:8000"]
    for name in ("postgres", "redis"):
        services[name] = {
            "image": f"portside-test/deploy-{name}:{project}",
            "build": {
                "context": str(STAND_INS),
                "dockerfile": f"{name}.Dockerfile",
                "args": {"BASE": PYTHON_BASE},
                "labels": dict(TEST_LABELS),
            },
        }
    return {
        "services": services,
        "secrets": {name: {"file": str(secrets / name)} for name in SECRET_NAMES},
    }


class Stack:
    """``docker-compose`` on deploy/compose.yaml plus the override, as one project."""

    def __init__(self, directory: Path, project: str) -> None:
        self.project = project
        command = os.environ.get("PORTSIDE_COMPOSE_COMMAND", "docker-compose").split()
        self.base = [
            *command,
            "--project-name",
            project,
            "--env-file",
            str(directory / ".env"),
            "-f",
            str(COMPOSE_FILE),
            "-f",
            str(directory / "override.yaml"),
        ]

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return _run([*self.base, *args], timeout=timeout)

    def container(self, client: docker.DockerClient, service: str) -> Any:
        (cid,) = self("ps", "-a", "-q", service).stdout.split()
        return client.containers.get(cid)


@pytest.fixture
def stack(
    python_base: str, docker_client: docker.DockerClient, docker_cleanup: None
) -> Iterator[tuple[Stack, dict[str, str], dict[str, int]]]:
    project = f"portside-deploy-test-{os.getpid()}"
    ports = {"web": free_port(), "redis": free_port(), "flower": free_port()}
    with tempfile.TemporaryDirectory(prefix="portside-deploy-") as work:
        directory = Path(work)
        secrets = _write_secrets(directory / "secrets")
        (directory / ".env").write_text(
            # A GitHub App made by hand (the Setup page's way leaves these out).
            "PORTSIDE_GITHUB_APP_ID=12345\n"
            "PORTSIDE_GITHUB_PRIVATE_KEY_PATH=/run/secrets/github_private_key\n"
            "PORTSIDE_GITHUB_WEBHOOK_SECRET_FILE=/run/secrets/webhook_secret\n"
            "PORTSIDE_REGISTRY=registry.example.com\n"
            "PORTSIDE_DOMAIN=portside.example.com\n"
            "PORTSIDE_ACME_EMAIL=ops@example.com\n"
            f"PORTSIDE_REDIS_PORT={ports['redis']}\n"
            f"PORTSIDE_FLOWER_PORT={ports['flower']}\n"
            f"PORTSIDE_PROXY_NETWORK={project}-proxy\n"
        )
        override = _override(project, directory / "secrets", ports)
        (directory / "override.yaml").write_text(yaml.safe_dump(override))
        compose = Stack(directory, project)
        try:
            # One build of the Portside image (the other four services share its tag).
            compose("build", "migrate", "postgres", "redis", timeout=3000)
            yield compose, secrets, ports
        finally:
            # Containers first, then the project's networks and volumes; the images go
            # with docker_cleanup (they carry the test label).
            subprocess.run(
                [*compose.base, "down", "--volumes", "--remove-orphans", "--timeout", "10"],
                capture_output=True,
                timeout=300,
                check=False,
            )


def _wait_for(what: str, probe: Any, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (requests.RequestException, redis.RedisError) as exc:
            last = exc
        time.sleep(1)
    pytest.fail(f"{what}: still not after {timeout}s (last: {last!r})")


def test_the_control_plane_recipe_starts_and_serves(
    stack: tuple[Stack, dict[str, str], dict[str, int]], docker_client: docker.DockerClient
) -> None:
    compose, secrets, ports = stack
    base_url = f"http://127.0.0.1:{ports['web']}"

    started = subprocess.run(
        [*compose.base, "up", "-d", "--no-build", *STARTED],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert started.returncode == 0, started.stderr + compose("logs", "--no-color").stdout

    migrate = compose.container(docker_client, "migrate")
    migrate.reload()
    assert migrate.attrs["State"]["Status"] == "exited"
    assert migrate.attrs["State"]["ExitCode"] == 0, migrate.logs().decode()
    health = _wait_for("web /healthz", lambda: requests.get(f"{base_url}/healthz", timeout=5).ok)
    assert health
    ready = _wait_for(
        "web /readyz", lambda: requests.get(f"{base_url}/readyz", timeout=5).status_code == 200
    )
    assert ready
    assert requests.get(f"{base_url}/readyz", timeout=5).json()["checks"] == {
        "database": "ok",
        "redis": "ok",
    }

    # Redis on the host's loopback, as the host's build worker reaches it: the password
    # is required.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=ports["redis"], socket_timeout=5).ping()
    broker = f"redis://:{secrets['redis_password']}@127.0.0.1:{ports['redis']}/0"
    probe = Celery("deploy-test", broker=broker, set_as_current=False)
    try:
        replies = _wait_for("the control worker's ping", lambda: probe.control.ping(timeout=3))
    finally:
        probe.close()
    assert any(name.startswith("control@") for reply in replies for name in reply)
    for name in ("worker", "beat", "web", "flower"):
        container = compose.container(docker_client, name)
        container.reload()
        assert container.attrs["State"]["Status"] == "running", container.logs().decode()
        assert container.attrs["RestartCount"] == 0, container.logs().decode()
    assert "beat: Starting" in compose.container(docker_client, "beat").logs().decode()
    # gunicorn writes its control socket under HOME, which the image makes writable.
    assert "Permission denied" not in compose.container(docker_client, "web").logs().decode()

    created = compose(
        "exec", "-T", "web", "portside", "tokens", "create", "--name", "deploy", "--scope", "admin"
    )
    token = created.stdout.strip().splitlines()[-1]
    refused = requests.get(f"{base_url}/v1/services", timeout=10)
    listed = requests.get(
        f"{base_url}/v1/services", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert refused.status_code == 401
    assert listed.status_code == 200, listed.text
    assert listed.json() == []
