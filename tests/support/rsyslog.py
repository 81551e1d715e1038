"""A real rsyslog (Debian's ``rsyslogd``) of a test's own: it listens on a free loopback
UDP and TCP port and writes ``<tag> <message>`` lines to a file, stopped afterwards."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.docker import unavailable

RSYSLOGD = "/usr/sbin/rsyslogd"
CONFIG = """\
global(workDirectory="{work}")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{port}")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="tagged" type="string" string="%syslogtag% %msg%\\n")
action(type="omfile" file="{out}" template="tagged")
"""


@dataclass
class Rsyslog:
    port: int
    out: Path

    @property
    def udp(self) -> str:
        return f"udp://127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def wait_for(self, needle: str, timeout: float = 20.0) -> list[str]:
        """The lines holding ``needle``, once there is one (AssertionError after timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines() if needle in line]
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"rsyslog got no line with {needle!r}: {self.lines()[-5:]}")


def _free_port() -> int:
    """A port free for both UDP and TCP on loopback."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    if not shutil.which(RSYSLOGD):
        unavailable("rsyslogd is not installed (Debian package rsyslog; scripts/test-env.sh up)")
    work = tmp_path / "rsyslog"
    work.mkdir()
    port = _free_port()
    server = Rsyslog(port, work / "out.log")
    config = work / "rsyslog.conf"
    config.write_text(CONFIG.format(work=work, port=port, out=server.out))
    process = subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(config), "-i", str(work / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                assert process.stderr is not None
                raise AssertionError(f"rsyslogd did not start: {process.stderr.read()!r}")
            time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
