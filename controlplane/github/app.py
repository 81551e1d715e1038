"""The GitHub App client: a JWT for the App, cached installation tokens, API clients.

PyGithub signs the RS256 JWT (iat 60 s in the past, exp 5 min later) and exchanges it
for an installation token against ``PORTSIDE_GITHUB_API_URL``, so GitHub Enterprise
Server works the same. Tokens stay in this process's memory only.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests
from github import Auth, Github, GithubException, GithubIntegration

from controlplane.errors import ConfigError, PermanentError, TransientError
from controlplane.settings import Settings

# Refresh a cached token this long before GitHub says it expires.
REFRESH_MARGIN = dt.timedelta(minutes=5)
TIMEOUT = 10
T = TypeVar("T")


class GitHubError(TransientError):
    """GitHub could not be reached or answered 5xx/429; worth retrying."""


class GitHubRefused(PermanentError):
    """GitHub answered with a client error that retrying will not change."""


@dataclass(frozen=True, slots=True)
class InstallationToken:
    token: str
    expires_at: dt.datetime

    def __repr__(self) -> str:
        return f"InstallationToken(token='********', expires_at={self.expires_at.isoformat()})"

    def fresh(self, now: dt.datetime) -> bool:
        return self.expires_at - REFRESH_MARGIN > now


def translate(exc: Exception, what: str) -> Exception:
    """Map a PyGithub/requests error onto Portside's transient/permanent split."""
    if isinstance(exc, GithubException):
        if exc.status == 429 or exc.status >= 500:
            return GitHubError(f"{what}: GitHub answered {exc.status}")
        return GitHubRefused(f"{what}: GitHub answered {exc.status}")
    if isinstance(exc, requests.RequestException | OSError):
        return GitHubError(f"{what}: GitHub is unreachable ({exc.__class__.__name__})")
    return exc


class GitHubApp:
    """One per process; thread-safe token cache keyed by installation id."""

    def __init__(self, app_id: int, private_key: str, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")
        self._app_auth = Auth.AppAuth(app_id, private_key)
        self._integration = GithubIntegration(
            auth=self._app_auth,
            base_url=self.api_url,
            timeout=TIMEOUT,
            retry=None,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        self._tokens: dict[int, InstallationToken] = {}
        # Clone tokens, by (installation, repository full name): one repository, read-only.
        self._clone_tokens: dict[tuple[int, str], InstallationToken] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> GitHubApp | None:
        """The App client, or None when no App is configured (the API then says so)."""
        if settings.github_app_id is None and not settings.github_private_key:
            return None
        if settings.github_app_id is None or not settings.github_private_key:
            raise ConfigError(
                "PORTSIDE_GITHUB_APP_ID and PORTSIDE_GITHUB_PRIVATE_KEY must be set together"
            )
        return cls(
            settings.github_app_id, settings.github_private_key.reveal(), settings.github_api_url
        )

    def installation_token(self, installation_id: int, *, refresh: bool = False) -> str:
        """A token valid for at least REFRESH_MARGIN; ``refresh`` after a 401 forces a new one."""
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            cached = self._tokens.get(installation_id)
            if cached is not None and cached.fresh(now) and not refresh:
                return cached.token
            try:
                grant = self._integration.get_access_token(installation_id)
            except Exception as exc:
                raise translate(exc, f"installation {installation_id} token") from None
            expires_at = grant.expires_at
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=dt.UTC)
            self._tokens[installation_id] = InstallationToken(grant.token, expires_at)
            return grant.token

    def clone_token(self, installation_id: int, full_name: str, *, refresh: bool = False) -> str:
        """A token that reads the contents of ``full_name`` and nothing else: what a build
        worker gets to clone, so a worker (or the fork code it runs) holding it cannot reach
        the installation's other repositories nor write anywhere."""
        now = dt.datetime.now(dt.UTC)
        key = (installation_id, full_name.lower())
        with self._lock:
            cached = self._clone_tokens.get(key)
            if cached is not None and cached.fresh(now) and not refresh:
                return cached.token
            grant = self._mint(
                installation_id,
                {
                    "repositories": [full_name.rpartition("/")[2]],
                    "permissions": {"contents": "read"},
                },
            )
            self._clone_tokens[key] = grant
            return grant.token

    def _mint(self, installation_id: int, scope: dict[str, object]) -> InstallationToken:
        """POST /app/installations/{id}/access_tokens with a repository and permission
        scope (PyGithub's get_access_token sends no repositories)."""
        what = f"installation {installation_id} token"
        try:
            response = requests.post(
                f"{self.api_url}/app/installations/{installation_id}/access_tokens",
                json=scope,
                headers={
                    "Authorization": f"Bearer {self._app_auth.create_jwt()}",
                    "Accept": "application/vnd.github+json",
                    "X-GitHub-Api-Version": "2022-11-28",
                },
                timeout=TIMEOUT,
            )
        except requests.RequestException as exc:
            raise translate(exc, what) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise GitHubError(f"{what}: GitHub answered {response.status_code}")
        if response.status_code != 201:
            raise GitHubRefused(f"{what}: GitHub answered {response.status_code}")
        body = response.json()
        expires_at = dt.datetime.fromisoformat(str(body["expires_at"]).replace("Z", "+00:00"))
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=dt.UTC)
        return InstallationToken(str(body["token"]), expires_at)

    def call(self, installation_id: int, what: str, operation: Callable[[Github], T]) -> T:
        """Run ``operation`` with an installation client; a 401 refreshes the token once."""
        for refresh in (False, True):
            client = self.client(installation_id, refresh=refresh)
            try:
                return operation(client)
            except GithubException as exc:
                if exc.status == 401 and not refresh:
                    continue
                raise translate(exc, what) from None
            except requests.RequestException as exc:
                raise translate(exc, what) from None
        raise AssertionError("unreachable")

    def client(self, installation_id: int, *, refresh: bool = False) -> Github:
        """An API client acting as the installation."""
        return Github(
            auth=Auth.Token(self.installation_token(installation_id, refresh=refresh)),
            base_url=self.api_url,
            timeout=TIMEOUT,
            retry=None,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
