"""An HTTP client of Portside's REST API, for the ``portside`` command (and scripts).

Every failure is a :class:`ClientError` whose ``exit_code`` says what kind it is:
1 the server or the network failed, 2 the API refused the input, 3 not found, 4 the token
is missing, invalid or of the wrong scope. The message is one line, the API's own when it
sent one.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from controlplane.errors import PortsideError

PAGE_SIZE = 100
USER_AGENT = "portside-cli"
# Following a log: a read waits this long (the server's keep-alives come far more often);
# a broken stream is opened again up to RESUME_ATTEMPTS times in a row, waiting
# RESUME_DELAY seconds more each time.
STREAM_READ_TIMEOUT = 60.0
RESUME_ATTEMPTS = 5
RESUME_DELAY = 1.0


class ClientError(PortsideError):
    """Root of the client's errors; ``exit_code`` is what the command exits with."""

    exit_code = 1

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Unavailable(ClientError):
    """The control plane did not answer, or answered with a server error (5xx)."""

    exit_code = 1


class Refused(ClientError):
    """The API refused the request (a 4xx other than 401, 403 and 404)."""

    exit_code = 2


class ApiNotFound(ClientError):
    """404: the API knows no such record (named apart from the domain's ``NotFound``)."""

    exit_code = 3


class AuthFailed(ClientError):
    """401 or 403: no valid token, or one of a scope that may not do this."""

    exit_code = 4


def error_for(status: int, message: str) -> ClientError:
    """The exception for an HTTP error ``status`` (the one place the mapping lives)."""
    if status in (401, 403):
        return AuthFailed(message, status)
    if status == 404:
        return ApiNotFound(message, status)
    if 400 <= status < 500:
        return Refused(message, status)
    return Unavailable(message, status)


def _message(response: requests.Response) -> str:
    """The API's ``{"error", "message", "details"}`` as one line, or the status line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message: str = body["message"]
        details = body.get("details")
        if details:
            message += f" ({json.dumps(details, separators=(', ', ': '))})"
        return message
    return f"{response.status_code} {response.reason} from {response.url}"


@dataclass(frozen=True, slots=True)
class LogLine:
    text: str


@dataclass(frozen=True, slots=True)
class Quiet:
    """Nothing arrived for ``seconds`` (the stream is alive but the build is busy)."""

    seconds: float


LogEvent = LogLine | Quiet


class PortsideClient:
    """The API at ``url`` with a bearer ``token``; methods return the decoded JSON."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = requests.Session()
        self._http.headers.update({"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT})

    def close(self) -> None:
        self._http.close()

    # -- plumbing -------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self._http.request(method, f"{self.url}{path}", **kwargs)
        except requests.Timeout:
            raise Unavailable(f"the control plane at {self.url} did not answer in time") from None
        except requests.RequestException as exc:
            reason = type(exc).__name__
            raise Unavailable(
                f"the control plane at {self.url} is unreachable ({reason})"
            ) from None
        if response.status_code >= 400:
            raise error_for(response.status_code, _message(response))
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise Unavailable(f"{self.url}{path} did not answer with JSON") from None

    def json_object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON object the API answers ``method path`` with."""
        result = self.request(method, path, **kwargs)
        if not isinstance(result, dict):
            raise Unavailable(f"{self.url}{path} did not answer with a JSON object")
        return result

    def paged(self, path: str, params: dict[str, Any] | None = None, limit: int = 0) -> list[Any]:
        """Every item of a paginated list (``X-Pagination``), or the first ``limit``."""
        items: list[Any] = []
        page = 1
        while True:
            response = self._send(
                "GET", path, params={**(params or {}), "page": page, "page_size": PAGE_SIZE}
            )
            batch = response.json()
            if not isinstance(batch, list):
                raise Unavailable(f"{self.url}{path} did not answer with a list")
            items += batch
            if limit and len(items) >= limit:
                return items[:limit]
            pagination = json.loads(response.headers.get("X-Pagination") or "{}")
            if not batch or "next_page" not in pagination:
                return items
            page = int(pagination["next_page"])

    # -- services and variables -----------------------------------------------------------

    def services(self) -> list[dict[str, Any]]:
        return self.paged("/v1/services")

    def service(self, service_id: int) -> dict[str, Any]:
        return self.json_object("GET", f"/v1/services/{service_id}")

    def create_service(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.json_object("POST", "/v1/services", json=spec)

    def delete_service(self, service_id: int) -> None:
        self.request("DELETE", f"/v1/services/{service_id}")

    def find_service(self, name_or_id: str) -> dict[str, Any]:
        """A service named ``name_or_id``, or with that id."""
        if name_or_id.isdigit():
            return self.service(int(name_or_id))
        for service in self.services():
            if service["name"] == name_or_id:
                return service
        raise ApiNotFound(f"there is no service named {name_or_id!r}", 404)

    def variables(self, service_id: int, reveal: bool = False) -> list[dict[str, Any]]:
        params = {"reveal": "true"} if reveal else {}
        result: list[dict[str, Any]] = self.request(
            "GET", f"/v1/services/{service_id}/variables", params=params
        )
        return result

    def set_variable(
        self, service_id: int, name: str, value: str, *, kind: str, scope: str, secret: bool
    ) -> dict[str, Any]:
        body = {"value": value, "kind": kind, "scope": scope, "secret": secret}
        return self.json_object("PUT", f"/v1/services/{service_id}/variables/{name}", json=body)

    # -- builds and logs ------------------------------------------------------------------

    def builds(self, params: dict[str, Any], limit: int = 0) -> list[dict[str, Any]]:
        return self.paged("/v1/builds", params, limit)

    def build(self, build_id: int) -> dict[str, Any]:
        return self.json_object("GET", f"/v1/builds/{build_id}")

    def logs(self, build_id: int) -> dict[str, Any]:
        return self.json_object("GET", f"/v1/builds/{build_id}/logs")

    def follow_logs(self, build_id: int, quiet_after: float = 10.0) -> Iterator[LogEvent]:
        """The build's log lines as they come (server-sent events) until the log ends.

        When nothing arrives for ``quiet_after`` seconds a :class:`Quiet` is yielded (and
        again each ``quiet_after`` seconds after), so a caller can show progress. The
        server's keep-alives (every ``PORTSIDE_LOG_KEEPALIVE`` seconds, at most 30) tell a
        quiet build from a dead connection: without them for a minute the stream counts as
        lost. A stream that breaks (a proxy, a restarted web process) is opened again after
        the last entry received (``Last-Event-ID``), so no line shows twice or goes
        missing; after :data:`RESUME_ATTEMPTS` breaks in a row with nothing received the
        follow fails.
        """
        return self._follow(f"/v1/builds/{build_id}/logs", f"build {build_id}", quiet_after)

    def environment_logs(self, environment_id: int, params: dict[str, Any]) -> dict[str, Any]:
        return self.json_object("GET", f"/v1/environments/{environment_id}/logs", params=params)

    def follow_environment_logs(
        self, environment_id: int, service: str | None = None, quiet_after: float = 10.0
    ) -> Iterator[LogEvent]:
        """The environment's new lines as they come, each a :class:`LogLine` holding the
        line's JSON object; it ends only when the environment is removed."""
        query = f"?{urlencode({'service': service})}" if service else ""
        path = f"/v1/environments/{environment_id}/logs{query}"
        return self._follow(path, f"environment {environment_id}", quiet_after)

    def _follow(self, path: str, what: str, quiet_after: float) -> Iterator[LogEvent]:
        """Follow the server-sent events at ``path`` (see :meth:`follow_logs`)."""
        opened = [self._open_stream(path, None)]  # a 404 or 401 is raised here, at once
        events: queue.Queue[tuple[str, str] | BaseException] = queue.Queue()
        stop = threading.Event()

        def read() -> None:
            last_id: str | None = None
            breaks = 0
            response: requests.Response | None = opened[0]
            while True:
                try:
                    if response is None:
                        response = self._open_stream(path, last_id)
                        opened.append(response)
                    for kind, data, event_id in parse_sse(response.iter_lines(decode_unicode=True)):
                        last_id, breaks = event_id or last_id, 0
                        events.put((kind, data))
                        if kind == "end":
                            return
                    broken: BaseException = Unavailable(f"the log stream of {what} ended early")
                except (Unavailable, requests.RequestException) as exc:
                    broken = exc
                except BaseException as exc:  # the build or the token is gone, or a bug
                    events.put(exc)
                    return
                response = None
                breaks += 1
                if stop.wait(RESUME_DELAY * breaks) or breaks > RESUME_ATTEMPTS:
                    events.put(broken)
                    return

        reader = threading.Thread(target=read, name=f"portside-logs {what}", daemon=True)
        reader.start()
        last = time.monotonic()
        try:
            while True:
                try:
                    item = events.get(timeout=quiet_after)
                except queue.Empty:
                    yield Quiet(time.monotonic() - last)
                    continue
                if isinstance(item, ClientError) and not isinstance(item, Unavailable):
                    raise item
                if isinstance(item, BaseException):
                    raise Unavailable(
                        f"the log stream of {what} was interrupted ({type(item).__name__})"
                    )
                kind, data = item
                if kind == "end":
                    return
                if kind == "message":
                    last = time.monotonic()
                    text = json.loads(data)
                    yield LogLine(text if isinstance(text, str) else json.dumps(text))
        finally:
            stop.set()
            for response in opened:
                response.close()

    def _open_stream(self, path: str, last_id: str | None) -> requests.Response:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        return self._send(
            "GET", path, headers=headers, stream=True, timeout=(self.timeout, STREAM_READ_TIMEOUT)
        )

    # -- environments ---------------------------------------------------------------------

    def environments(self, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.paged("/v1/environments", params)

    def environment(self, environment_id: int) -> dict[str, Any]:
        return self.json_object("GET", f"/v1/environments/{environment_id}")

    def find_environment(self, name_or_id: str) -> dict[str, Any]:
        if name_or_id.isdigit():
            return self.environment(int(name_or_id))
        for environment in self.environments():
            if environment["name"] == name_or_id:
                return environment
        raise ApiNotFound(f"there is no environment named {name_or_id!r}", 404)

    def deploy(self, service_id: int, ref: str | None = None) -> dict[str, Any]:
        """Build and deploy what ``ref`` names (default: the service's branch head)."""
        body = {"ref": ref} if ref else {}
        return self.json_object("POST", f"/v1/services/{service_id}/deploy", json=body)

    def redeploy(self, environment_id: int) -> dict[str, Any]:
        return self.json_object("POST", f"/v1/environments/{environment_id}/redeploy")

    def create_environment(self, service_id: int, name: str, branch: str) -> dict[str, Any]:
        """An environment of kind ``name`` (staging) tracking ``branch``."""
        return self.json_object(
            "POST",
            f"/v1/services/{service_id}/environments",
            json={"name": name, "branch": branch},
        )

    def promote(self, environment_id: int, target_id: int) -> dict[str, Any]:
        """Deploy what ``environment_id`` runs to ``target_id`` without building again."""
        return self.json_object(
            "POST", f"/v1/environments/{environment_id}/promote", json={"to": target_id}
        )

    def teardown(self, environment_id: int) -> None:
        self.request("DELETE", f"/v1/environments/{environment_id}")

    def approve(self, environment_id: int, sha: str | None = None) -> dict[str, Any]:
        """Approve what waits in the environment: its held deployment (of ``sha``, when
        given) or a fork's commit ``sha`` that was reviewed (refused unless the head)."""
        return self.json_object(
            "POST",
            f"/v1/environments/{environment_id}/approve",
            json={"sha": sha} if sha else {},
        )

    def approve_secrets(self, environment_id: int, sha: str) -> dict[str, Any]:
        return self.json_object(
            "POST", f"/v1/environments/{environment_id}/approve-secrets", json={"sha": sha}
        )


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) triples from the lines of a ``text/event-stream`` body; ``id``
    is the event's own, None when it has none."""
    kind, data, event_id = "message", list[str](), None
    for line in lines:
        if line == "":
            if data:
                yield kind, "\n".join(data), event_id
            kind, data, event_id = "message", [], None
        elif line.startswith(":"):
            continue  # a comment: the server's keep-alive
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value
    # An event the body ends in the middle of is dropped: resuming sends it again whole.
