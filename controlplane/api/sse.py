"""Server-sent event responses, for the build logs' and the environments' streams alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from flask import Response, current_app

from controlplane.api.requestdb import session
from controlplane.errors import TemporarilyUnavailable
from controlplane.services import logstream


def event_stream(events: Callable[[logstream.LogStreams], Iterator[str]]) -> Response:
    """``events`` of the process's log streams as ``text/event-stream``. The request's
    database session goes back first (streaming holds none); past the process's cap of
    followers it is refused (503), and a stream's place is given back when it closes."""
    session().close()
    streams: logstream.LogStreams = current_app.extensions["portside.log_streams"]
    release = streams.admit()
    if release is None:
        raise TemporarilyUnavailable("too many log streams are open: try again later")
    response = Response(
        events(streams),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.call_on_close(release)
    return response
