"""The delete client's part of Docker's token flow that no real registry here can show:
where a challenge may send the push credentials, and a registry's own words on refusal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

from controlplane.errors import TransientError
from controlplane.services import registries
from tests.support.live import LiveServer

DIGEST = "sha256:" + "a" * 64


class Challenger:
    """A registry answering every DELETE with ``status`` and ``headers``; records requests."""

    def __init__(self) -> None:
        self.status = 401
        self.headers: dict[str, str] = {}
        self.body = ""
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.seen.append((request.path, request.headers.get("Authorization")))
        response = Response(self.body, status=self.status, headers=self.headers)
        return response(environ, start_response)


@pytest.fixture
def challenger() -> Iterator[tuple[Challenger, str]]:
    app = Challenger()
    server = LiveServer(app).start()
    yield app, server.url.removeprefix("http://")
    server.stop()


def _delete(host: str) -> None:
    credentials = registries.Credentials(host, "pusher", "secret")
    registries.delete_image(credentials, f"{host}/team/app", DIGEST)


def test_credentials_never_go_to_a_plain_http_realm_off_loopback(
    challenger: tuple[Challenger, str],
) -> None:
    app, host = challenger
    app.headers = {
        "WWW-Authenticate": 'Bearer realm="http://auth.example.invalid/token",service="x"'
    }
    with pytest.raises(registries.RegistryRefused, match="not on HTTPS"):
        _delete(host)
    assert [path for path, _auth in app.seen] == [f"/v2/team/app/manifests/{DIGEST}"]


@pytest.mark.parametrize(
    "realm",
    [
        # urlsplit's netloc starts with a loopback "host:port", but the URL's host is the
        # one after the '@': the push credentials would travel there in clear.
        "http://127.0.0.1:80@auth.example.invalid/token",
        "http://localhost:1@auth.example.invalid/token",
        # A port that is no port: what the client would make of it is not what was checked.
        "http://127.0.0.1:80%40auth.example.invalid/token",
    ],
)
def test_a_realm_that_only_looks_like_loopback_gets_no_credentials(
    challenger: tuple[Challenger, str], realm: str
) -> None:
    app, host = challenger
    app.headers = {"WWW-Authenticate": f'Bearer realm="{realm}",service="x"'}
    with pytest.raises(registries.RegistryRefused, match="not on HTTPS"):
        _delete(host)
    assert [path for path, _auth in app.seen] == [f"/v2/team/app/manifests/{DIGEST}"]


def test_a_refusal_carries_the_registrys_words_and_a_5xx_is_transient(
    challenger: tuple[Challenger, str],
) -> None:
    app, host = challenger
    app.status = 405
    app.headers = {"Content-Type": "application/json"}
    app.body = '{"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]}'
    with pytest.raises(registries.RegistryRefused, match="405 UNSUPPORTED: The operation is"):
        _delete(host)
    app.status = 503
    with pytest.raises(TransientError, match="503"):
        _delete(host)
