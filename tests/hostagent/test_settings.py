"""AgentSettings.from_env: defaults, masking, errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostagent.agent import main
from hostagent.errors import AgentConfigError
from hostagent.settings import AgentSettings

BASE = {
    "PORTSIDE_URL": "http://cp.example:8000/",
    "PORTSIDE_TOKEN": "tok-secret",
    "HOME": "/home/a",
}


def test_defaults():
    settings = AgentSettings.from_env(BASE)
    assert settings.url == "http://cp.example:8000"
    assert settings.interval == 10
    assert settings.publish_host == ""
    assert settings.state_dir == Path("/home/a/.local/share/portside/agent")
    assert settings.compose_command is None


def test_all_set():
    settings = AgentSettings.from_env(
        {
            **BASE,
            "PORTSIDE_AGENT_INTERVAL": "2.5",
            "PORTSIDE_AGENT_PUBLISH_HOST": "127.0.0.1",
            "PORTSIDE_AGENT_STATE_DIR": "/var/lib/portside",
            "PORTSIDE_COMPOSE_COMMAND": "docker-compose",
        }
    )
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
    ],
)
def test_bad_values_name_the_variable(changes, variable):
    with pytest.raises(AgentConfigError, match=variable):
        AgentSettings.from_env({**BASE, **changes})


def test_main_exits_2_on_bad_config(capsys):
    assert main({"PORTSIDE_TOKEN": "x"}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PORTSIDE_URL" in err
