"""AgentSettings.from_env: defaults, masking, errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostagent.agent import main
from hostagent.errors import AgentConfigError
from hostagent.settings import AgentSettings
from hostagent.snapshot import PreviewLimits

BASE = {
    "PORTSIDE_URL": "https://cp.example:8000/",
    "PORTSIDE_TOKEN": "tok-secret",
    "HOME": "/home/a",
}


def test_defaults():
    settings = AgentSettings.from_env(BASE)
    assert settings.url == "https://cp.example:8000"
    assert settings.interval == 10
    assert settings.publish_host == ""
    assert settings.state_dir == Path("/home/a/.local/share/portside/agent")
    assert settings.compose_command is None
    assert settings.preview_limits == PreviewLimits(cpus=1.0, memory="512m", pids=256)
    assert settings.proxy_network == ""


def test_all_set():
    settings = AgentSettings.from_env(
        {
            **BASE,
            "PORTSIDE_AGENT_INTERVAL": "2.5",
            "PORTSIDE_AGENT_PUBLISH_HOST": "127.0.0.1",
            "PORTSIDE_AGENT_STATE_DIR": "/var/lib/portside",
            "PORTSIDE_COMPOSE_COMMAND": "docker-compose",
            "PORTSIDE_AGENT_PREVIEW_CPUS": "0.5",
            "PORTSIDE_AGENT_PREVIEW_MEMORY": "1G",
            "PORTSIDE_AGENT_PREVIEW_PIDS": "100",
            "PORTSIDE_AGENT_PREVIEW_MAX_SERVICES": "4",
            "PORTSIDE_AGENT_PROXY_NETWORK": " portside_proxy ",
        }
    )
    assert settings.proxy_network == "portside_proxy"
    assert settings.preview_limits == PreviewLimits(cpus=0.5, memory="1g", pids=100, services=4)
    assert settings.interval == 2.5
    assert settings.publish_host == "127.0.0.1"
    assert settings.state_dir == Path("/var/lib/portside")
    assert settings.compose_command == ("docker-compose",)


def test_token_is_masked():
    settings = AgentSettings.from_env(BASE)
    assert "tok-secret" not in repr(settings) and "tok-secret" not in str(settings)


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"PORTSIDE_URL": ""}, "PORTSIDE_URL"),
        ({"PORTSIDE_URL": "cp.example"}, "PORTSIDE_URL"),
        ({"PORTSIDE_TOKEN": ""}, "PORTSIDE_TOKEN"),
        ({"PORTSIDE_AGENT_INTERVAL": "soon"}, "PORTSIDE_AGENT_INTERVAL"),
        ({"PORTSIDE_AGENT_INTERVAL": "0"}, "PORTSIDE_AGENT_INTERVAL"),
        ({"PORTSIDE_AGENT_PUBLISH_HOST": "127.0.0.1:80"}, "PORTSIDE_AGENT_PUBLISH_HOST"),
        ({"PORTSIDE_COMPOSE_COMMAND": "'docker"}, "PORTSIDE_COMPOSE_COMMAND"),
        ({"PORTSIDE_AGENT_PREVIEW_CPUS": "lots"}, "PORTSIDE_AGENT_PREVIEW_CPUS"),
        ({"PORTSIDE_AGENT_PREVIEW_CPUS": "0"}, "PORTSIDE_AGENT_PREVIEW_CPUS"),
        ({"PORTSIDE_AGENT_PREVIEW_MEMORY": "half"}, "PORTSIDE_AGENT_PREVIEW_MEMORY"),
        ({"PORTSIDE_AGENT_PREVIEW_PIDS": "0"}, "PORTSIDE_AGENT_PREVIEW_PIDS"),
        ({"PORTSIDE_AGENT_PREVIEW_PIDS": "-5"}, "PORTSIDE_AGENT_PREVIEW_PIDS"),
        ({"PORTSIDE_AGENT_PREVIEW_MAX_SERVICES": "0"}, "PORTSIDE_AGENT_PREVIEW_MAX_SERVICES"),
        ({"PORTSIDE_AGENT_PREVIEW_MAX_SERVICES": "many"}, "PORTSIDE_AGENT_PREVIEW_MAX_SERVICES"),
        ({"PORTSIDE_AGENT_PROXY_NETWORK": "proxy net"}, "PORTSIDE_AGENT_PROXY_NETWORK"),
        ({"PORTSIDE_AGENT_PROXY_NETWORK": "-proxy"}, "PORTSIDE_AGENT_PROXY_NETWORK"),
        ({"PORTSIDE_URL": "http://cp.example:8000"}, "PORTSIDE_ALLOW_INSECURE_URL"),
        ({"PORTSIDE_URL": "http://10.0.0.2"}, "PORTSIDE_ALLOW_INSECURE_URL"),
        ({"PORTSIDE_URL": "http://127.0.0.1.example.com"}, "PORTSIDE_ALLOW_INSECURE_URL"),
        ({"PORTSIDE_URL": "http://0.0.0.0:8000"}, "PORTSIDE_ALLOW_INSECURE_URL"),
    ],
)
def test_bad_values_name_the_variable(changes, variable):
    with pytest.raises(AgentConfigError, match=variable):
        AgentSettings.from_env({**BASE, **changes})


def test_main_exits_2_on_bad_config(capsys):
    assert main({"PORTSIDE_TOKEN": "x"}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PORTSIDE_URL" in err


def test_main_exits_2_on_plain_http_to_another_host(capsys):
    assert main({**BASE, "PORTSIDE_URL": "http://cp.example"}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PORTSIDE_ALLOW_INSECURE_URL=1" in err


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://127.8.9.1",
        "http://[::1]:80",
        "http://localhost:5000",
    ],
)
def test_plain_http_on_loopback_is_fine(url):
    assert AgentSettings.from_env({**BASE, "PORTSIDE_URL": url}).url == url


def test_plain_http_elsewhere_only_when_told():
    environ = {**BASE, "PORTSIDE_URL": "http://cp.internal", "PORTSIDE_ALLOW_INSECURE_URL": "1"}
    assert AgentSettings.from_env(environ).url == "http://cp.internal"
    with pytest.raises(AgentConfigError):
        AgentSettings.from_env({**environ, "PORTSIDE_ALLOW_INSECURE_URL": "yes please"})


def test_token_and_url_from_files(tmp_path: Path):
    """The agent reads PORTSIDE_<NAME>_FILE like every Portside process (systemd secrets)."""
    token_file = tmp_path / "token"
    token_file.write_text("tok-from-file\n")
    url_file = tmp_path / "url"
    url_file.write_text("https://cp.example\n")
    settings = AgentSettings.from_env(
        {
            "HOME": "/home/a",
            "PORTSIDE_TOKEN_FILE": str(token_file),
            "PORTSIDE_URL_FILE": str(url_file),
        }
    )
    assert settings.token == "tok-from-file"
    assert settings.url == "https://cp.example"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"PORTSIDE_TOKEN": "", "PORTSIDE_TOKEN_FILE": "{dir}/missing"},
            "PORTSIDE_TOKEN_FILE cannot be read",
        ),
        ({"PORTSIDE_TOKEN_FILE": "{dir}/token"}, "set only one of PORTSIDE_TOKEN and"),
    ],
)
def test_token_file_errors_name_the_variable(tmp_path: Path, changes: dict[str, str], message: str):
    (tmp_path / "token").write_text("tok")
    environ = {**BASE, **{key: value.format(dir=tmp_path) for key, value in changes.items()}}
    with pytest.raises(AgentConfigError, match=message):
        AgentSettings.from_env(environ)


def test_metrics_off_and_three_images_kept_by_default():
    settings = AgentSettings.from_env(BASE)
    assert settings.metrics_addr is None
    assert settings.keep_images == 3


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        ("9101", ("127.0.0.1", 9101)),
        ("127.0.0.1:9101", ("127.0.0.1", 9101)),
        ("10.1.2.3:9101", ("10.1.2.3", 9101)),
        ("[::1]:9101", ("::1", 9101)),
        ("localhost:9101", ("localhost", 9101)),
        (" 0.0.0.0:9101 ", ("0.0.0.0", 9101)),
    ],
)
def test_metrics_address(raw, address):
    settings = AgentSettings.from_env({**BASE, "PORTSIDE_AGENT_METRICS_ADDR": raw})
    assert settings.metrics_addr == address
    assert str(address[1]) in repr(settings)


@pytest.mark.parametrize(
    "raw", [":9101", "metrics.example:9101", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "x"]
)
def test_metrics_address_must_be_explicit(raw):
    with pytest.raises(AgentConfigError, match="PORTSIDE_AGENT_METRICS_ADDR"):
        AgentSettings.from_env({**BASE, "PORTSIDE_AGENT_METRICS_ADDR": raw})


def test_keep_images():
    assert AgentSettings.from_env({**BASE, "PORTSIDE_AGENT_KEEP_IMAGES": "0"}).keep_images == 0
    for raw in ("-1", "three", "101"):
        with pytest.raises(AgentConfigError, match="PORTSIDE_AGENT_KEEP_IMAGES"):
            AgentSettings.from_env({**BASE, "PORTSIDE_AGENT_KEEP_IMAGES": raw})
