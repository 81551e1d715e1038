"""A WSGI app served over real HTTP on 127.0.0.1 from a background thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import make_server

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def free_port() -> int:
    """A port nothing listens on right now (for processes told their URL up front)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LiveServer:
    """Serves ``app`` threaded until :meth:`stop`; ``url`` is known before start."""

    def __init__(self, app: WSGIApp, port: int = 0) -> None:
        self._server = make_server("127.0.0.1", port, app, threaded=True)  # type: ignore[arg-type]
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
