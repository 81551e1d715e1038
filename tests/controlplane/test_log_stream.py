"""Following a build's log over real HTTP: the API's event stream, the dashboard's and
``portside logs -f`` stay open through quiet and end with the build, whatever its final
status, closed log or not (real PostgreSQL and Redis, the app served by LiveServer)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest
import requests
from redis import Redis

from buildworker import channel
from controlplane.app import create_app
from controlplane.db import Database
from controlplane.models import Build, utcnow
from controlplane.services import builds, logs
from controlplane.settings import Settings
from tests.controlplane.test_cli import PORTSIDE, clean_environ
from tests.controlplane.test_cli_client import new_build, secret_of, service_id
from tests.dashboard.test_dashboard import make_token
from tests.support.live import LiveServer, free_port

__all__ = ["service_id"]  # a fixture, used by name

QUIET_SECONDS = 30


@dataclass
class Follower:
    """One event stream read on a thread of its own: its raw lines as they come."""

    response: requests.Response
    lines: list[str] = field(default_factory=list)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> Follower:
        def read() -> None:
            try:
                for line in self.response.iter_lines(decode_unicode=True):
                    self.lines.append(line)
            except BaseException as exc:  # shown by the assertions
                self.error = exc

        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()
        return self

    @property
    def open(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait_closed(self, seconds: float) -> None:
        assert self.thread is not None
        self.thread.join(seconds)
        assert not self.thread.is_alive(), f"still streaming: {self.lines[-5:]}"
        self.response.close()

    @property
    def keepalives(self) -> int:
        return self.lines.count(": keep-alive")

    def events(self) -> list[tuple[str, object]]:
        """(event, JSON data) of each event; ``message`` for a log line."""
        found, kind = [], "message"
        for line in self.lines:
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                found.append((kind, json.loads(line.removeprefix("data: "))))
                kind = "message"
        return found


Served = Callable[[int], str]


@pytest.fixture
def served(settings: Settings, database: Database) -> Iterator[Served]:
    """Serve the control plane with a keep-alive interval of the test's choice."""
    servers: list[LiveServer] = []

    def serve(keepalive: int) -> str:
        server = LiveServer(create_app(replace(settings, log_keepalive=keepalive))).start()
        servers.append(server)
        return server.url

    yield serve
    for server in servers:
        server.stop()


def follow_api(url: str, headers: dict[str, str], build_id: int) -> Follower:
    response = requests.get(
        f"{url}/v1/builds/{build_id}/logs",
        headers={"Accept": "text/event-stream", **headers},
        stream=True,
        timeout=(5, 120),
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return Follower(response).start()


def follow_dashboard(url: str, database: Database, build_id: int) -> Follower:
    browser = requests.Session()
    logged_in = browser.post(
        f"{url}/login", data={"token": make_token(database, "read", "viewer")}, timeout=5
    )
    assert logged_in.status_code == 200 and 'class="logout"' in logged_in.text, logged_in.text
    response = browser.get(f"{url}/builds/{build_id}/log/stream", stream=True, timeout=(5, 120))
    assert response.status_code == 200, response.text
    return Follower(response).start()


def finish(database: Database, redis: Redis, build_id: int, status: str, *, close: bool) -> None:
    """End the build as the control plane would: the log closed first (unless the build
    was stopped without its worker), then the status committed."""
    if close:
        logs.close(redis, build_id)
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        build.status, build.finished_at = status, utcnow()


def wait_for_line(follower: Follower, line: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while line not in follower.lines:
        assert time.monotonic() < deadline, f"no {line!r} in {follower.lines}"
        assert follower.open, f"closed early: {follower.lines} {follower.error!r}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_log_stream_left_quiet_for_30_s_is_still_open_and_then_ends_with_the_build(
    served: Served,
    database: Database,
    redis_url: str,
    read_headers: dict[str, str],
    service_id: int,
) -> None:
    url = served(15)  # the default keep-alive: longer than the web pool's 5 s socket timeout
    build_id = new_build(database, service_id, status="running")
    redis = Redis.from_url(redis_url)
    channel.append(redis, build_id, ["Cloning into 'hello'..."])
    api = follow_api(url, read_headers, build_id)
    dashboard = follow_dashboard(url, database, build_id)
    cli = subprocess.Popen(
        [str(PORTSIDE), "logs", str(build_id), "-f", "--quiet-after", "5"],
        env={**clean_environ(), "PORTSIDE_URL": url, "PORTSIDE_TOKEN": secret_of(read_headers)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for follower in (api, dashboard):
            wait_for_line(follower, json.dumps("Cloning into 'hello'...").join(("data: ", "")))
        assert cli.stdout is not None
        assert cli.stdout.readline() == "Cloning into 'hello'...\n"

        time.sleep(QUIET_SECONDS)

        for follower in (api, dashboard):
            assert follower.open, (follower.lines, follower.error)
            assert follower.keepalives >= 1, follower.lines
            assert follower.events() == [("message", "Cloning into 'hello'...")]
        assert cli.poll() is None, cli.stderr.read() if cli.stderr else ""

        channel.append(redis, build_id, ["Step 1/1 : FROM base"])
        finish(database, redis, build_id, "succeeded", close=True)

        for follower in (api, dashboard):
            follower.wait_closed(30)
            assert follower.events() == [
                ("message", "Cloning into 'hello'..."),
                ("message", "Step 1/1 : FROM base"),
                ("end", {"status": "succeeded"}),
            ]
        rest, stderr = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
        redis.close()
    assert cli.returncode == 0, stderr
    assert rest == "Step 1/1 : FROM base\n"
    assert stderr.splitlines()[-1] == f"portside: build {build_id} succeeded"
    assert any(line.startswith("... still") for line in stderr.splitlines()), stderr


@pytest.mark.parametrize("status", builds.FINISHED)
def test_both_streams_end_for_every_final_status_though_nobody_closes_the_log(
    served: Served,
    database: Database,
    redis_url: str,
    read_headers: dict[str, str],
    service_id: int,
    status: str,
) -> None:
    url = served(1)
    build_id = new_build(database, service_id, status="running")
    redis = Redis.from_url(redis_url)
    channel.append(redis, build_id, ["==> build (build-1)"])
    api = follow_api(url, read_headers, build_id)
    dashboard = follow_dashboard(url, database, build_id)
    try:
        for follower in (api, dashboard):
            wait_for_line(follower, ": keep-alive")  # quiet, and still following

        finish(database, redis, build_id, status, close=False)

        for follower in (api, dashboard):
            follower.wait_closed(20)
            assert follower.error is None
            assert follower.events() == [
                ("message", "==> build (build-1)"),
                ("end", {"status": status}),
            ]
    finally:
        redis.close()


def test_a_stream_resumes_after_the_last_event_id_once_the_build_ended(
    served: Served,
    database: Database,
    redis_url: str,
    read_headers: dict[str, str],
    service_id: int,
) -> None:
    """A client that lost the stream just before the end gets only what it missed."""
    url = served(1)
    build_id = new_build(database, service_id, status="running")
    redis = Redis.from_url(redis_url)
    try:
        channel.append(redis, build_id, ["one", "two", "three"])
        seen = logs.read(redis, build_id)[0][0]
        finish(database, redis, build_id, "failed", close=True)
    finally:
        redis.close()

    resumed = follow_api(url, {**read_headers, "Last-Event-ID": seen}, build_id)
    resumed.wait_closed(20)

    assert resumed.events() == [
        ("message", "two"),
        ("message", "three"),
        ("end", {"status": "failed"}),
    ]
    ids = [line for line in resumed.lines if line.startswith("id: ")]
    assert len(ids) == 3  # each line's, and the end marker's: resuming again is exact


class CuttingProxy:
    """A TCP proxy in front of the control plane whose open connections can be cut, as a
    proxy's idle timeout or a restarted web process would."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.connections: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _address = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.connections += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for side in (source, target):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.connections = []

    def close(self) -> None:
        self.cut()
        self._listener.close()


def test_portside_logs_f_resumes_a_cut_stream_after_the_last_line_it_printed(
    served: Served,
    database: Database,
    redis_url: str,
    read_headers: dict[str, str],
    service_id: int,
) -> None:
    url = served(1)
    proxy = CuttingProxy(int(url.rsplit(":", 1)[1]))
    build_id = new_build(database, service_id, status="running")
    redis = Redis.from_url(redis_url)
    channel.append(redis, build_id, ["Step 1/3", "Step 2/3"])
    cli = subprocess.Popen(
        [str(PORTSIDE), "logs", str(build_id), "-f"],
        env={
            **clean_environ(),
            "PORTSIDE_URL": f"http://127.0.0.1:{proxy.port}",
            "PORTSIDE_TOKEN": secret_of(read_headers),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stdout is not None
        assert [cli.stdout.readline(), cli.stdout.readline()] == ["Step 1/3\n", "Step 2/3\n"]

        proxy.cut()
        channel.append(redis, build_id, ["Step 3/3"])
        finish(database, redis, build_id, "succeeded", close=True)

        rest, stderr = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
        redis.close()
        proxy.close()
    assert cli.returncode == 0, stderr
    assert rest == "Step 3/3\n"  # once: resumed after "Step 2/3", nothing repeated
    assert stderr.splitlines()[-1] == f"portside: build {build_id} succeeded"


def test_followers_past_the_cap_are_refused_and_a_closed_one_frees_its_place(
    settings: Settings,
    database: Database,
    read_headers: dict[str, str],
    service_id: int,
) -> None:
    """Each follower holds a web thread and a Redis connection while its build runs: one
    token opening streams without end would take every thread the API, the agents and
    GitHub's webhooks need. Past the process's cap (API and dashboard together) a stream
    is refused with 503, and a follower that went away gives its place back."""
    app = create_app(replace(settings, log_keepalive=1))
    streams = app.extensions["portside.log_streams"]
    app.extensions["portside.log_streams"] = replace(streams, max_followers=2)
    server = LiveServer(app).start()
    build_id = new_build(database, service_id, status="running")

    def open_stream() -> requests.Response:
        return requests.get(
            f"{server.url}/v1/builds/{build_id}/logs",
            headers={"Accept": "text/event-stream", **read_headers},
            stream=True,
            timeout=(5, 60),
        )

    try:
        first = follow_api(server.url, read_headers, build_id)
        follow_dashboard(server.url, database, build_id)
        refused = open_stream()
        assert refused.status_code == 503, refused.text
        first.response.close()
        deadline = time.monotonic() + 30
        while (again := open_stream()).status_code == 503:
            assert time.monotonic() < deadline, "the closed follower's place never came back"
            time.sleep(0.2)
        assert again.status_code == 200
        again.close()
    finally:
        server.stop()


def test_a_last_event_id_redis_cannot_read_replays_from_the_start(
    served: Served,
    database: Database,
    redis_url: str,
    read_headers: dict[str, str],
    service_id: int,
) -> None:
    """The header is the client's word: an id past Redis's 64-bit stream ids is read as no
    id at all, instead of breaking the stream with Redis's error."""
    url = served(1)
    build_id = new_build(database, service_id, status="running")
    redis = Redis.from_url(redis_url)
    try:
        channel.append(redis, build_id, ["one"])
        finish(database, redis, build_id, "succeeded", close=False)
    finally:
        redis.close()
    overflow = {**read_headers, "Last-Event-ID": f"{2**64}-0"}
    resumed = follow_api(url, overflow, build_id)
    resumed.wait_closed(20)
    assert resumed.error is None
    assert resumed.events()[-1] == ("end", {"status": "succeeded"})
