"""A build worker refuses a plain-http:// control plane off loopback unless told otherwise:
its token, git tokens and registry credentials would cross the network in clear."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from buildworker.api import ControlPlane, InsecureURL
from contracts.urls import url_refusal
from controlplane.settings import Settings

PORTSIDE = Path(sys.executable).with_name("portside")


@pytest.mark.parametrize(
    "url",
    [
        "https://portside.example.com",
        "https://10.0.0.5:8443/",
        "http://127.0.0.1:8000",
        "http://127.0.0.53",
        "http://localhost:8000",
        "http://[::1]:8000",
    ],
)
def test_https_or_loopback_is_accepted(url: str) -> None:
    assert url_refusal(url, allow_insecure=False) is None
    assert ControlPlane(url, "token").url == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://portside.example.com",
        "http://10.0.0.5:8000",
        "http://[2001:db8::1]:8000",
        "http://localhost.example.com",
    ],
)
def test_plain_http_off_loopback_is_refused_unless_allowed(url: str) -> None:
    refusal = url_refusal(url, allow_insecure=False)
    assert refusal is not None and "PORTSIDE_ALLOW_INSECURE_URL=1" in refusal
    assert "\n" not in refusal
    with pytest.raises(InsecureURL):
        ControlPlane(url, "token")
    assert url_refusal(url, allow_insecure=True) is None
    assert ControlPlane(url, "token", allow_insecure=True).url == url


def test_the_setting_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).allow_insecure_url is False
    assert Settings.from_env({"PORTSIDE_ALLOW_INSECURE_URL": "1"}).allow_insecure_url is True
    assert Settings.from_env({"PORTSIDE_ALLOW_INSECURE_URL": "yes"}).allow_insecure_url is False


def run_buildworker(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """``portside buildworker`` as a real process (it execs the build worker's own entry
    point, so it cannot run inside the test's process)."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("PORTSIDE_")}
    environ.update(PORTSIDE_DATA_DIR=str(tmp_path), **settings)
    environ.pop("DOCKER_HOST", None)
    return subprocess.run(
        [str(PORTSIDE), "buildworker", "--name", "b1"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_portside_buildworker_stops_at_start_with_one_line(tmp_path: Path) -> None:
    refused = run_buildworker(tmp_path, PORTSIDE_URL="http://portside.example.com")

    assert refused.returncode == 2, refused
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(
        "portside: PORTSIDE_URL is plain http:// to portside.example.com"
    )

    # Told so, it goes past that check (and stops at the next: no Docker engine here).
    allowed = run_buildworker(
        tmp_path,
        PORTSIDE_URL="http://portside.example.com",
        PORTSIDE_ALLOW_INSECURE_URL="1",
        DOCKER_HOST=f"unix://{tmp_path / 'no-docker.sock'}",
    )

    assert allowed.returncode == 1, allowed
    assert "PORTSIDE_URL" not in allowed.stderr
    assert "no Docker engine answers" in allowed.stderr
