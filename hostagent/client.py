"""The control plane, seen from the agent: desired state in (ETag, long poll), status out.

Every failure maps to a transient or permanent AgentError; the last good desired state
lives on disk so an agent restarted while the control plane is down still converges.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

from contracts.agentwire import AgentReport, DesiredState
from hostagent.errors import (
    AgentError,
    InvalidDesiredState,
    PermanentAgentError,
    TransientAgentError,
)
from hostagent.files import private_dir
from hostagent.settings import AgentSettings
from hostagent.snapshot import parse_desired_state

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
WAIT_MARGIN = 10.0  # seconds on top of ?wait= before the client gives up on a long poll
MAX_WAIT = 60
CONNECT_TIMEOUT = 5.0
PERMANENT_BACKOFF = 300.0
CACHE_FILE = "desired-state.json"


@dataclass(frozen=True)
class Fetched:
    """The desired state to reconcile now; ``changed`` is False after a 304."""

    state: DesiredState
    changed: bool


class DesiredStateSource(Protocol):
    """Where ``run_once`` gets desired state from and sends its reports to."""

    def fetch(self, wait: float) -> Fetched:
        """The current desired state; raises AgentError when it cannot be trusted."""
        ...

    def report(self, status: AgentReport) -> None:
        """Send one status report."""
        ...

    @property
    def last_good(self) -> DesiredState | None:
        """The last desired state that was fetched and validated, if any."""
        ...


def backoff_delay(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float = 300.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped.

    Pure given ``rand``; the fixed half guarantees real backing off, the random half
    keeps a fleet of agents from hammering a recovering control plane in step.
    """
    attempt = max(attempt, 0)
    ceiling = min(cap, base * float(2 ** min(attempt, 32)))
    return ceiling / 2 + float(rand()) * ceiling / 2


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)


def error_for_status(response: requests.Response) -> AgentError:
    """Map a non-success answer to the right error class (one place for the rules)."""
    status = response.status_code
    message = f"control plane answered {status} for {response.request.method} {response.url}"
    with contextlib.suppress(ValueError, AttributeError):
        body = response.json()
        if isinstance(body, dict) and body.get("message"):
            message += f": {str(body['message'])[:200]}"
    if status == 429:
        return TransientAgentError(
            message, retry_after=parse_retry_after(response.headers.get("Retry-After"))
        )
    if status >= 500:
        return TransientAgentError(message)
    return PermanentAgentError(message, retry_after=PERMANENT_BACKOFF)


class StateCache:
    """The last good desired state on disk, written atomically (it holds secrets: 0600).

    The body is kept as the control plane sent it, so environments refused on arrival are
    refused again after a restart instead of vanishing (and being torn down).
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / CACHE_FILE

    def load(self) -> DesiredState | None:
        """The cached state, or None when there is none or it no longer validates."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return parse_desired_state(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, InvalidDesiredState) as exc:
            log.warning("ignoring the cached desired state %s: %s", self.path, exc)
            return None

    def save(self, body: object) -> None:
        """Keep ``body``, a snapshot that parsed (JSON as it came), for the next start."""
        private_dir(self.path.parent)
        text = json.dumps(body, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".desired-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class ControlPlaneClient:
    """HTTP to the control plane with the host's token; holds the last good state."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        session: requests.Session | None = None,
        cache: StateCache | None = None,
    ) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {settings.token}"
        self.session.headers["User-Agent"] = f"portside-agent/{AGENT_VERSION}"
        self.cache = cache if cache is not None else StateCache(settings.state_dir)
        self._state: DesiredState | None = self.cache.load()

    @property
    def last_good(self) -> DesiredState | None:
        return self._state

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, f"{self.settings.url}{path}", **kwargs)
        except requests.RequestException as exc:
            raise TransientAgentError(
                f"control plane unreachable ({exc.__class__.__name__}: {exc})"
            ) from exc

    def fetch(self, wait: float = 0) -> Fetched:
        """Ask for the desired state; 304 keeps the current one, 200 replaces it.

        A generation lower than the one we hold is taken as the server's truth (its
        database was restored): the body is the authority, not our memory.
        """
        seconds = max(0, min(int(wait), MAX_WAIT))
        headers = {"Accept": "application/json"}
        if self._state is not None:
            headers["If-None-Match"] = f'"{self._state.generation}"'
        response = self._request(
            "GET",
            "/v1/agent/desired-state",
            params={"wait": seconds},
            headers=headers,
            timeout=(CONNECT_TIMEOUT, seconds + WAIT_MARGIN),
        )
        if response.status_code == 304:
            if self._state is None:  # we sent no ETag: a 304 means nothing we can use
                raise TransientAgentError("control plane answered 304 to a request without ETag")
            return Fetched(self._state, changed=False)
        if response.status_code != 200:
            raise error_for_status(response)
        try:
            body = response.json()
        except ValueError:
            raise InvalidDesiredState("desired state: the body is not JSON") from None
        state = parse_desired_state(body)
        previous = self._state
        if previous is not None and state.generation < previous.generation:
            log.warning(
                "generation went back from %d to %d: taking the server's word for it",
                previous.generation,
                state.generation,
            )
        self._state = state
        try:
            self.cache.save(body)
        except OSError as exc:  # the cache is a fallback: never fail a good fetch for it
            log.warning("could not cache the desired state in %s: %s", self.cache.path, exc)
        return Fetched(state, changed=previous is None or previous != state)

    def report(self, status: AgentReport) -> None:
        """POST the status report; 204 (or any 2xx) is success."""
        response = self._request(
            "POST",
            "/v1/agent/status",
            json=status.to_json(),
            timeout=(CONNECT_TIMEOUT, 30.0),
        )
        if not 200 <= response.status_code < 300:
            raise error_for_status(response)

    def ship_logs(self, batch: Mapping[str, Any]) -> None:
        """POST one batch of container output (:mod:`hostagent.logship`); a short read
        timeout, so a slow control plane delays logs, never the agent."""
        response = self._request(
            "POST", "/v1/agent/logs", json=dict(batch), timeout=(CONNECT_TIMEOUT, 10.0)
        )
        if not 200 <= response.status_code < 300:
            raise error_for_status(response)

    def close(self) -> None:
        self.session.close()
