"""The build worker's HTTP client of the control plane (it has no database access).

Every call maps failures onto the build errors: unreachable or 5xx is transient, a
refusal is permanent, and 409 means "this step must not run" (:class:`StepRefused`).
"""

from __future__ import annotations

from typing import Any

import requests

from buildworker.errors import BuildError, PermanentBuildError, TransientBuildError
from contracts.gitremote import GitAuth
from contracts.urls import url_refusal

TIMEOUT = 30


class InsecureURL(BuildError):
    """The control plane's URL would carry the worker's secrets in clear (a setup error)."""


class StepRefused(PermanentBuildError):
    """The control plane says the step must not run: done already, cancelled, taken over."""


class ControlPlane:
    """A session with the worker's bearer token; the token is never logged or raised."""

    def __init__(
        self, url: str, token: str, timeout: float = TIMEOUT, *, allow_insecure: bool = False
    ) -> None:
        if refusal := url_refusal(url, allow_insecure=allow_insecure):
            raise InsecureURL(refusal)
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._session.headers["User-Agent"] = "portside-buildworker"

    def __repr__(self) -> str:
        return f"ControlPlane(url={self.url!r})"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        what = f"{method} {path}"
        try:
            response = self._session.request(
                method, f"{self.url}{path}", timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise TransientBuildError(
                f"control plane unreachable ({what}): {exc.__class__.__name__}"
            ) from None
        if response.status_code == 409:
            raise StepRefused(_message(response))
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientBuildError(
                f"control plane answered {response.status_code} to {what}: {_message(response)}"
            )
        if response.status_code >= 400:
            raise PermanentBuildError(
                f"control plane refused {what} ({response.status_code}): {_message(response)}"
            )
        return response.json() if response.content else None

    def claim(self, build_id: int, step: str, attempt: int, worker: str) -> dict[str, Any]:
        spec: dict[str, Any] = self._call(
            "POST",
            f"/v1/builds/{build_id}/steps/{step}/claim",
            json={"attempt": attempt, "worker": worker},
        )
        return spec

    def finish(
        self,
        build_id: int,
        step: str,
        attempt: int,
        *,
        error: str | None = None,
        worker: str | None = None,
        artifacts: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Report a step; with ``worker``, the answer claims the next step for it
        (``next``) and tells what the last step deployed (``deployment``)."""
        body: dict[str, Any] = {
            "attempt": attempt,
            "status": "failed" if error else "succeeded",
            "error": error,
        }
        if worker is not None:
            body["worker"] = worker
        if artifacts is not None:
            body["artifacts"] = artifacts
        answer = self._call("POST", f"/v1/builds/{build_id}/steps/{step}/finish", json=body)
        return answer if isinstance(answer, dict) else {}

    def heartbeat(self, build_id: int, attempt: int) -> None:
        self._call("POST", f"/v1/builds/{build_id}/heartbeat", json={"attempt": attempt})

    def git_token(self, build_id: int, *, refresh: bool = False) -> str:
        body = self._call(
            "POST", f"/v1/builds/{build_id}/git-token", params={"refresh": str(refresh).lower()}
        )
        return str(body["token"])

    def git_remote_auth(self, build_id: int) -> GitAuth:
        """A git-URL service's own credentials (none for a public remote)."""
        body = self._call("POST", f"/v1/builds/{build_id}/git-token")
        return GitAuth(token=body.get("token") or None, ssh_key=body.get("ssh_key") or None)


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return str(body)[:200]
