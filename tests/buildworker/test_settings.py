"""The build worker's own settings: the same value rules as the control plane's, read
without it; a bad one stops ``portside-buildworker`` with one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from buildworker.settings import BuildWorkerSettings
from contracts.environ import SettingError
from controlplane.settings import Settings

BIN = Path(sys.executable).parent
ENVIRON = {
    "PORTSIDE_URL": "https://portside.example.com/",
    "PORTSIDE_REDIS_URL": "redis://:redis-password-never-shown@redis.example.com:6379/2",
    "PORTSIDE_REGISTRY": "registry.example.com/team/",
    "PORTSIDE_BUILD_TIMEOUT": "600",
    "PORTSIDE_BUILD_UNTRUSTED": " Only ",
    "PORTSIDE_ALLOW_INSECURE_URL": "1",
}


def test_the_build_worker_reads_what_the_control_plane_would(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("ps_abc_worker-token\n")
    environ = {**ENVIRON, "PORTSIDE_TOKEN_FILE": str(token), "PORTSIDE_DATA_DIR": str(tmp_path)}

    mine = BuildWorkerSettings.from_env(environ)
    theirs = Settings.from_env(environ)

    for field in ("url", "redis_url", "registry", "build_timeout", "build_untrusted"):
        assert getattr(mine, field) == getattr(theirs, field), field
    assert (mine.allow_insecure_url, mine.data_dir) == (True, tmp_path)
    assert mine.token.reveal() == "ps_abc_worker-token"
    assert "worker-token" not in repr(mine)
    assert "never-shown" not in repr(mine) and "redis.example.com:6379/2" in repr(mine)


def test_defaults_match_the_control_plane_s() -> None:
    mine, theirs = BuildWorkerSettings.from_env({}), Settings.from_env({})

    for field in ("url", "redis_url", "registry", "build_timeout", "build_untrusted"):
        assert getattr(mine, field) == getattr(theirs, field), field


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORTSIDE_BUILD_TIMEOUT", "5"),
        ("PORTSIDE_URL", "ftp://portside.example.com"),
        ("PORTSIDE_REDIS_URL", "http://redis"),
        ("PORTSIDE_REGISTRY", "https://registry.example.com"),
        ("PORTSIDE_BUILD_UNTRUSTED", "sometimes"),
        ("PORTSIDE_BUILD_CACHE_MAX", "lots"),
        ("PORTSIDE_BUILD_CACHE_MAX", "-1G"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingError, match=variable):
        BuildWorkerSettings.from_env({variable: value})


@pytest.mark.parametrize(
    ("value", "budget"), [(None, 20 << 30), ("512M", 512 << 20), ("3g", 3 << 30), ("1000", 1000)]
)
def test_the_build_cache_budget_is_bytes_with_a_suffix(value: str | None, budget: int) -> None:
    environ = {} if value is None else {"PORTSIDE_BUILD_CACHE_MAX": value}
    assert BuildWorkerSettings.from_env(environ).cache_max == budget


def test_portside_buildworker_stops_on_a_bad_setting_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTSIDE_")}
    completed = subprocess.run(
        [str(BIN / "portside-buildworker"), "--name", "b1"],
        env={**env, "PORTSIDE_BUILD_TIMEOUT": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 2, completed
    assert completed.stderr.splitlines() == [
        "portside: PORTSIDE_BUILD_TIMEOUT must be an integer, got 'soon'"
    ]
