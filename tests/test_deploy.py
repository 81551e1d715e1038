"""``deploy/``: the compose files are valid for Debian's docker-compose, and complete."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
REQUIRED = {
    "PORTSIDE_REGISTRY": "registry.example.com",
    "PORTSIDE_DOMAIN": "portside.example.com",
    "PORTSIDE_ACME_EMAIL": "ops@example.com",
}


def compose_config(path: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = os.environ.get("PORTSIDE_COMPOSE_COMMAND", "docker-compose").split()
    if shutil.which(command[0]) is None:
        pytest.fail(f"{command[0]} is not installed (scripts/test-env.sh installs it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTSIDE_")}
    env.update(extra_env)
    return subprocess.run(
        [*command, "-f", str(path), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def host_ip(port: str | dict[str, Any]) -> str:
    return port.get("host_ip", "") if isinstance(port, dict) else port.split(":", 1)[0]


def test_the_control_plane_compose_file_is_valid_and_complete() -> None:
    result = compose_config(DEPLOY / "compose.yaml", REQUIRED)

    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {
        "migrate",
        "web",
        "worker",
        "beat",
        "flower",
        "traefik",
        "postgres",
        "redis",
    }
    for name in ("migrate", "web", "worker", "beat", "flower"):
        environment = services[name]["environment"]
        # Every secret from a file, none inline.
        assert environment["PORTSIDE_SECRET_KEY_FILE"] == "/run/secrets/secret_key"
        assert environment["PORTSIDE_DATABASE_URL_FILE"] == "/run/secrets/database_url"
        assert "PORTSIDE_SECRET_KEY" not in environment
        assert "PORTSIDE_GITHUB_WEBHOOK_SECRET" not in environment
        assert environment["PORTSIDE_URL"] == "https://portside.example.com"
        # Redis only with its password, which comes from a file like every secret.
        assert environment["PORTSIDE_REDIS_URL_FILE"] == "/run/secrets/redis_url"
        assert "PORTSIDE_REDIS_URL" not in environment
        assert environment["PORTSIDE_METRICS_TOKEN_FILE"] == "/run/secrets/metrics_token"
    # migrate waits for a database and a broker that answer; the rest for its success.
    healthy = {"condition": "service_healthy"}
    assert services["migrate"]["depends_on"] == {"postgres": healthy, "redis": healthy}
    for name in ("web", "worker", "beat", "flower"):
        migrated = {"migrate": {"condition": "service_completed_successfully"}}
        assert services[name]["depends_on"] == migrated
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"]
    assert "POSTGRES_PASSWORD" not in services["postgres"]["environment"]
    redis = services["redis"]
    assert [secret_name(secret) for secret in redis["secrets"]] == ["redis_password"]
    script = " ".join(redis["entrypoint"])
    assert "/run/secrets/redis_password" in script and "requirepass" in script
    assert "redis-server /tmp/auth.conf" in script  # the password is in no command line
    # Only the build worker on the server's own host reaches Redis, on loopback.
    assert [host_ip(port) for port in redis["ports"]] == ["127.0.0.1"]
    # Flower only on the server's loopback (compose v1 prints strings, v2 mappings).
    assert [host_ip(port) for port in services["flower"]["ports"]] == ["127.0.0.1"]


def secret_name(secret: str | dict[str, Any]) -> str:
    return secret["source"] if isinstance(secret, dict) else secret


def test_the_redis_entrypoint_makes_a_password_required(tmp_path: Path) -> None:
    """The compose file's Redis start-up script, run against Debian's redis-server: a
    client without the password is refused, and no process shows the password."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    script: str = document["services"]["redis"]["entrypoint"][-1].replace("$$", "$")
    password = "deploy-test-" + os.urandom(8).hex()
    (tmp_path / "redis_password").write_text(password + "\n")
    port = 20000 + os.getpid() % 10000
    script = (
        script.replace("/run/secrets/redis_password", str(tmp_path / "redis_password"))
        .replace("/tmp/auth.conf", str(tmp_path / "auth.conf"))
        .replace("chown redis", "true")
        .replace("docker-entrypoint.sh redis-server", server)
        .replace("--appendonly yes", f"--port {port} --dir {tmp_path} --save ''")
    )
    process = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    try:
        client = redis.Redis(port=port, socket_connect_timeout=1)
        authed = redis.Redis(port=port, password=password, socket_connect_timeout=1)
        for _ in range(100):
            try:
                authed.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        assert authed.ping()
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        assert oct((tmp_path / "auth.conf").stat().st_mode & 0o777) == oct(0o600)
        assert password not in Path(f"/proc/{process.pid}/cmdline").read_text()
    finally:
        process.terminate()
        process.wait(10)


def test_the_compose_file_names_a_missing_setting() -> None:
    missing = {k: v for k, v in REQUIRED.items() if k != "PORTSIDE_DOMAIN"}

    result = compose_config(DEPLOY / "compose.yaml", missing)

    assert result.returncode != 0
    assert "set the control plane's domain in .env" in result.stderr


def test_the_github_app_can_be_left_to_the_setup_page() -> None:
    """Without the App's settings in .env the control plane starts with none configured,
    so the dashboard's Setup page can register one."""
    result = compose_config(DEPLOY / "compose.yaml", REQUIRED)

    assert result.returncode == 0, result.stderr
    environment = yaml.safe_load(result.stdout)["services"]["web"]["environment"]
    for name in (
        "PORTSIDE_GITHUB_APP_ID",
        "PORTSIDE_GITHUB_PRIVATE_KEY_PATH",
        "PORTSIDE_GITHUB_WEBHOOK_SECRET_FILE",
    ):
        assert not environment[name]


def test_the_host_traefik_compose_file_is_valid() -> None:
    result = compose_config(DEPLOY / "traefik" / "compose.yaml", {})

    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert set(config["services"]) == {"traefik"}
    # It routes through the network the agent attaches routed containers to, as the
    # control plane's Traefik does: one name in the agent unit and both compose files.
    assert config["networks"]["proxy"]["name"] == "portside-proxy"
    static = yaml.safe_load((DEPLOY / "traefik" / "traefik.yml").read_text())
    assert static["providers"]["docker"]["network"] == "portside-proxy"
    agent_unit = (DEPLOY / "portside-agent.service").read_text()
    assert "PORTSIDE_AGENT_PROXY_NETWORK=portside-proxy" in agent_unit


@pytest.mark.parametrize("unit", ["portside-agent.service", "portside-buildworker.service"])
def test_systemd_units_run_portside_from_an_environment_file(unit: str) -> None:
    text = (DEPLOY / unit).read_text()
    sections = [line for line in text.splitlines() if line.startswith("[")]

    assert sections == ["[Unit]", "[Service]", "[Install]"]
    assert "EnvironmentFile=/etc/portside/" in text
    assert "ExecStart=/opt/portside/venv/bin/portside " in text
    assert "Restart=always" in text
