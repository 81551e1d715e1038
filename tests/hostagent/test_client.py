"""The control-plane client against a tiny real HTTP server; the backoff helper."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from contracts.agentwire import AgentReport
from hostagent.client import (
    ControlPlaneClient,
    StateCache,
    backoff_delay,
    parse_retry_after,
)
from hostagent.errors import (
    InvalidDesiredState,
    PermanentAgentError,
    TransientAgentError,
)
from hostagent.settings import AgentSettings
from tests.hostagent.factories import env_body, state_body

Handler = Callable[[Request], Response]


@dataclass
class FakeControlPlane:
    """A scripted server: each request pops the next handler (the last one repeats)."""

    handlers: list[Handler] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "args": dict(request.args),
                "headers": dict(request.headers),
                "body": request.get_data(as_text=True),
            }
        )
        handler = self.handlers.pop(0) if len(self.handlers) > 1 else self.handlers[0]
        return handler(request)(environ, start_response)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    def handler(_request: Request) -> Response:
        return Response(
            json.dumps(body), status=status, headers=headers, mimetype="application/json"
        )

    return handler


def state_response(generation: int, *envs: dict[str, Any]) -> Handler:
    return json_response(
        state_body(*envs, generation=generation), headers={"ETag": f'"{generation}"'}
    )


def status_only(status: int, headers: dict[str, str] | None = None) -> Handler:
    return lambda _request: Response(status=status, headers=headers)


@pytest.fixture
def server() -> Iterator[tuple[FakeControlPlane, str]]:
    app = FakeControlPlane()
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(5)


@pytest.fixture
def make_client(server, tmp_path):
    clients: list[ControlPlaneClient] = []

    def make() -> ControlPlaneClient:
        settings = AgentSettings(url=server[1], token="agent-token", state_dir=tmp_path / "state")
        client = ControlPlaneClient(settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_fetch_then_304_keeps_state(server, make_client):
    app, _url = server
    app.handlers = [state_response(5, env_body()), status_only(304, {"ETag": '"5"'})]
    client = make_client()
    first = client.fetch(wait=0)
    assert first.changed and first.state.generation == 5
    second = client.fetch(wait=3)
    assert not second.changed and second.state is first.state
    req1, req2 = app.requests
    assert req1["headers"]["Authorization"] == "Bearer agent-token"
    assert "If-None-Match" not in req1["headers"]
    assert req2["headers"]["If-None-Match"] == '"5"'
    assert req2["args"] == {"wait": "3"}
    assert req1["path"] == "/v1/agent/desired-state"


def test_the_last_good_state_survives_a_restart(server, make_client):
    app, _url = server
    app.handlers = [state_response(5, env_body(env={"S": "secret"}))]
    make_client().fetch()
    restarted = make_client()
    assert restarted.last_good is not None and restarted.last_good.generation == 5
    assert dict(restarted.last_good.environments[0].env) == {"S": "secret"}
    cache_file = restarted.cache.path
    assert (cache_file.stat().st_mode & 0o777) == 0o600
    app.handlers = [status_only(304)]
    assert restarted.fetch().state.generation == 5
    assert app.requests[-1]["headers"]["If-None-Match"] == '"5"'


def test_lower_generation_is_the_servers_truth(server, make_client):
    app, _url = server
    app.handlers = [state_response(9, env_body()), state_response(3)]
    client = make_client()
    client.fetch()
    fetched = client.fetch()
    assert fetched.changed and fetched.state.generation == 3
    assert client.last_good is not None and client.last_good.environments == ()


@pytest.mark.parametrize(
    "handler",
    [
        json_response(state_body(complete=False)),  # empty and not vouched for
        json_response({"generation": "x"}),
        lambda _r: Response("<html>proxy error</html>", status=200),
        json_response({**state_body(env_body()), "host": None}),
    ],
)
def test_untrusted_bodies_keep_the_last_good_state(server, make_client, handler):
    app, _url = server
    app.handlers = [state_response(5, env_body()), handler]
    client = make_client()
    client.fetch()
    with pytest.raises(InvalidDesiredState):
        client.fetch()
    assert client.last_good is not None and client.last_good.generation == 5
    assert len(make_client().last_good.environments) == 1  # the cache was not overwritten


def test_429_honours_retry_after(server, make_client):
    app, _url = server
    app.handlers = [status_only(429, {"Retry-After": "17"})]
    with pytest.raises(TransientAgentError) as info:
        make_client().fetch()
    assert info.value.retry_after == 17


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_transient(server, make_client, status):
    app, _url = server
    app.handlers = [status_only(status)]
    with pytest.raises(TransientAgentError) as info:
        make_client().fetch()
    assert not isinstance(info.value, PermanentAgentError)


@pytest.mark.parametrize("status", [401, 403, 404])
def test_4xx_is_permanent_with_a_long_backoff(server, make_client, status):
    app, _url = server
    app.handlers = [json_response({"error": "nope", "message": "bad token"}, status=status)]
    with pytest.raises(PermanentAgentError, match="bad token") as info:
        make_client().fetch()
    assert info.value.retry_after is not None and info.value.retry_after >= 60


def test_network_error_is_transient(tmp_path):
    settings = AgentSettings(url="http://127.0.0.1:9", token="t", state_dir=tmp_path)
    client = ControlPlaneClient(settings)
    with pytest.raises(TransientAgentError, match="unreachable"):
        client.fetch()
    client.close()


def test_report_posts_the_status(server, make_client):
    app, _url = server
    app.handlers = [status_only(204)]
    make_client().report(AgentReport(1, "0.1.0", ()))
    (request,) = app.requests
    assert request["method"] == "POST" and request["path"] == "/v1/agent/status"
    assert json.loads(request["body"])["generation"] == 1
    app.handlers = [status_only(503)]
    with pytest.raises(TransientAgentError):
        make_client().report(AgentReport(1, "0.1.0", ()))


def test_cache_ignores_a_corrupt_file(tmp_path):
    (tmp_path / "desired-state.json").write_text("{not json")
    assert StateCache(tmp_path).load() is None


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (0, 0.0, 0.5),
        (0, 1.0, 1.0),
        (1, 0.0, 1.0),
        (3, 0.5, 6.0),
        (20, 0.0, 150.0),
        (20, 1.0, 300.0),
        (-1, 0.0, 0.5),
    ],
)
def test_backoff_delay(attempt, rand, expected):
    assert backoff_delay(attempt, rand=lambda: rand) == pytest.approx(expected)


def test_backoff_grows_and_is_capped():
    delays = [backoff_delay(n, cap=60, rand=lambda: 0.0) for n in range(12)]
    assert delays == sorted(delays) and max(delays) == 30


def test_parse_retry_after():
    assert parse_retry_after("5") == 5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10


def test_a_bad_environment_is_refused_and_stays_refused_after_a_restart(server, make_client):
    app, _url = server
    bad = env_body("bad", deployment_id=4, domains=["bad domain"])
    app.handlers = [state_response(5, env_body(), bad)]
    client = make_client()
    state = client.fetch().state
    assert [env.name for env in state.environments] == ["hello"]
    assert [(r.name, r.deployment_id) for r in state.refused] == [("bad", 4)]
    restarted = make_client().last_good
    assert restarted is not None and restarted == state
