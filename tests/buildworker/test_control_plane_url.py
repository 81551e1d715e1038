"""A build worker refuses a plain-http:// control plane off loopback unless told otherwise:
its token, git tokens and registry credentials would cross the network in clear."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildworker.api import ControlPlane, InsecureURL
from contracts.urls import url_refusal
from controlplane import cli
from controlplane.settings import Settings


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


def test_portside_buildworker_stops_at_start_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def never(*_: object) -> int:
        raise AssertionError("the worker started")

    monkeypatch.setattr(cli, "_celery", never)
    monkeypatch.setenv("PORTSIDE_URL", "http://portside.example.com")
    monkeypatch.setenv("PORTSIDE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PORTSIDE_ALLOW_INSECURE_URL", raising=False)

    assert cli.main(["buildworker", "--name", "b1"]) == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("portside: PORTSIDE_URL is plain http:// to portside.example.com")

    monkeypatch.setenv("PORTSIDE_ALLOW_INSECURE_URL", "1")
    started: list[list[str]] = []
    monkeypatch.setattr(cli, "_celery", lambda _settings, argv: started.append(argv) or 0)
    assert cli.main(["buildworker", "--name", "b1"]) == 0
    assert started and started[0][0] == "worker"
