"""The webhook benchmarks' stricter view: the wrk driver and the baseline's plain server."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from bench import webhooks, wrk
from bench.common import Server
from controlplane.github.webhooks import verify_signature


class Recorder(BaseHTTPRequestHandler):
    """Answers 202 over keep-alive and records each request's delivery id and signature."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, bool]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        signed = verify_signature(
            body, self.headers.get("X-Hub-Signature-256"), webhooks.WEBHOOK_SECRET
        )
        with self.lock:
            self.seen.append((self.headers.get(wrk.DELIVERY_HEADER, ""), signed))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[ThreadingHTTPServer]:
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(not wrk.available(), reason="wrk is not installed")
def test_wrk_sends_every_delivery_id_once_on_a_signed_body(
    recorder: ThreadingHTTPServer,
) -> None:
    body = (webhooks.PAYLOADS / webhooks.DEFAULT_PAYLOAD).read_bytes()
    headers = webhooks.delivery_headers("push", body, "")
    del headers[wrk.DELIVERY_HEADER]
    result = wrk.run_wrk(recorder.server_port, webhooks.PATH, headers, body, seconds=1)
    guids = [guid for guid, _signed in Recorder.seen]
    assert result.requests > 0 and not result.failed
    assert len(guids) >= result.requests
    assert len(set(guids)) == len(guids)
    assert all(guid.startswith(f"{result.prefix}-") for guid in guids)
    assert all(signed for _guid, signed in Recorder.seen)
    assert {guid.split("-")[1] for guid in guids} == {"1", "2"}  # both wrk threads


def test_the_plain_baseline_runs_sync_workers_without_the_project_s_config(
    tmp_path: Path,
) -> None:
    plain = Server("bare", "bench.bare_app:app", {}, tmp_path / "log", plain_workers=2)
    command = plain.command
    assert "-c" not in command
    assert command[command.index("--worker-class") + 1] == "sync"
    assert command[command.index("--threads") + 1] == "1"  # more would make it gthread
    assert plain.expected_workers() == 2
    assert "-c" in Server("portside", "controlplane.wsgi:app", {}, tmp_path / "log").command


def test_the_intake_figures_hold_the_wrk_view_to_the_issue_s_targets() -> None:
    args = argparse.Namespace(wrk_rounds=3, concurrency=8)
    result = {
        "strict": {"ratio": 0.55, "ratio_pass": False, "p99_ms": 12.0, "p99_pass": True},
        "verdict": {"ratio": 0.8, "ratio_pass": True, "p99_ms": 20.0, "p99_pass": True},
    }
    found = webhooks.figures(result, args)
    assert [(f.measured, f.target, f.met) for f in found] == [
        ("0.550", ">= 0.6", False),
        ("12.0 ms", "< 15 ms", True),
        ("0.800", ">= 0.35", True),
        ("20.0 ms", "< 50 ms", True),
    ]
    missing = webhooks.figures({"strict": {"problems": ["wrk is not installed"]}}, args)
    assert [f.met for f in missing] == [False] * 4
