"""The GitHub App client: a JWT for the App, cached installation tokens, API clients.

PyGithub signs the RS256 JWT (iat 60 s in the past, exp 5 min later) and exchanges it
for an installation token against ``PORTSIDE_GITHUB_API_URL``, so GitHub Enterprise
Server works the same. Tokens stay in this process's memory only.

GitHub's rate limits are waited out, never taken for a refusal: a short wait in the call,
a long one handed back as :class:`GitHubRateLimited` for the caller (a Celery task) to
retry after; a 401 mints a new installation token.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import requests
from github import Auth, Github, GithubException, GithubIntegration

from controlplane.errors import ConfigError, PermanentError, TransientError
from controlplane.settings import Settings

# Refresh a cached token this long before GitHub says it expires.
REFRESH_MARGIN = dt.timedelta(minutes=5)
TIMEOUT = 10
# GitHub's largest page: 150 repositories are two requests, not five.
PER_PAGE = 100
# A rate limit asking for this many seconds or fewer is waited out in the call (at most
# INLINE_WAITS times); a longer one goes back to the caller to retry later.
INLINE_WAIT_MAX = 10.0
INLINE_WAITS = 3
# GitHub: a secondary rate limit without Retry-After nor x-ratelimit-remaining: 0 means
# waiting at least a minute.
DEFAULT_RATE_LIMIT_WAIT = 60.0
T = TypeVar("T")


class GitHubError(TransientError):
    """GitHub could not be reached or answered 5xx/429; worth retrying."""


class GitHubRateLimited(GitHubError):
    """GitHub said to slow down; ``retry_after`` is how many seconds it asked to wait."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


@dataclass(frozen=True, slots=True)
class AppInstallation:
    """One entry of GitHub's list of the App's installations."""

    id: int
    account_login: str
    account_type: str
    suspended: bool


def rate_limit_wait(
    status: int, headers: Mapping[str, str] | None, message: str, now: float
) -> float | None:
    """The seconds GitHub asks to wait when an answer is a rate limit, else None.

    GitHub's rules: a 403 or 429 with ``Retry-After`` waits that long; with
    ``x-ratelimit-remaining: 0`` until ``x-ratelimit-reset`` (epoch seconds); a secondary
    limit (or a 429) saying neither waits a minute. Any other 403 is a refusal."""
    if status not in (403, 429):
        return None
    lower = {key.lower(): value for key, value in (headers or {}).items()}
    retry_after = str(lower.get("retry-after", "")).strip()
    if retry_after.isdigit():
        return float(retry_after)
    if str(lower.get("x-ratelimit-remaining", "")).strip() == "0":
        reset = str(lower.get("x-ratelimit-reset", "")).strip()
        return max(1.0, float(reset) - now) if reset.isdigit() else DEFAULT_RATE_LIMIT_WAIT
    if status == 429 or "rate limit" in message.lower():
        return DEFAULT_RATE_LIMIT_WAIT
    return None


def _answered(status: int, headers: Mapping[str, str] | None, message: str, what: str) -> Exception:
    wait = rate_limit_wait(status, headers, message, time.time())
    if wait is not None:
        return GitHubRateLimited(f"{what}: GitHub rate-limited us for {wait:.0f} s", wait)
    if status >= 500:
        return GitHubError(f"{what}: GitHub answered {status}")
    return GitHubRefused(f"{what}: GitHub answered {status}")


def translate(exc: Exception, what: str) -> Exception:
    """Map a PyGithub/requests error onto Portside's transient/permanent split."""
    if isinstance(exc, GithubException):
        data = exc.data if isinstance(exc.data, dict) else {}
        return _answered(exc.status, exc.headers, str(data.get("message") or ""), what)
    if isinstance(exc, requests.RequestException | OSError):
        return GitHubError(f"{what}: GitHub is unreachable ({exc.__class__.__name__})")
    return exc


class GitHubApp:
    """One per process; thread-safe token cache keyed by installation id."""

    def __init__(self, app_id: int, private_key: str, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.app_id = app_id
        self._app_auth = Auth.AppAuth(app_id, private_key)
        self._integration = GithubIntegration(
            auth=self._app_auth,
            base_url=self.api_url,
            timeout=TIMEOUT,
            per_page=PER_PAGE,
            retry=None,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        self._tokens: dict[int, InstallationToken] = {}
        # Clone tokens, by (installation, repository full name): one repository, read-only.
        self._clone_tokens: dict[tuple[int, str], InstallationToken] = {}
        self._lock = threading.Lock()
        self._bot_login: str | None = None

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
        if response.status_code != 201:
            try:
                message = str(response.json().get("message") or "")
            except ValueError:
                message = ""
            raise _answered(response.status_code, response.headers, message, what)
        body = response.json()
        expires_at = dt.datetime.fromisoformat(str(body["expires_at"]).replace("Z", "+00:00"))
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=dt.UTC)
        return InstallationToken(str(body["token"]), expires_at)

    def bot_login(self) -> str:
        """The login of the App's own bot user (``<slug>[bot]``, from ``GET /app``): what
        Portside wrote is told apart from what another Bot wrote by it, never by content
        anyone can copy (a comment's marker, a deployment's payload)."""
        with self._lock:
            if self._bot_login is None:
                try:
                    slug = self._integration.get_app().slug
                except Exception as exc:
                    raise translate(exc, "the App's identity") from None
                self._bot_login = f"{slug}[bot]"
            return self._bot_login

    def installations(self) -> list[AppInstallation]:
        """Every installation of the App, all pages of ``GET /app/installations`` (as the
        App, with its JWT): what the installation webhooks would have said, to catch up
        the ones missed while Portside was down."""
        try:
            return [
                AppInstallation(
                    item.id,
                    item.account.login if item.account is not None else "?",
                    item.target_type or "User",
                    item.suspended_at is not None,
                )
                for item in self._integration.get_installations()
            ]
        except Exception as exc:
            raise translate(exc, "the App's installations") from None

    def call(self, installation_id: int, what: str, operation: Callable[[Github], T]) -> T:
        """Run ``operation`` with an installation client: a 401 refreshes the token once,
        a short rate limit is waited out and the operation run again (so it must be
        idempotent), a long one raises :class:`GitHubRateLimited`."""
        refresh, refreshed, waits = False, False, 0
        while True:
            client = self.client(installation_id, refresh=refresh)
            refresh = False
            try:
                return operation(client)
            except GithubException as exc:
                if exc.status == 401 and not refreshed:
                    refresh = refreshed = True
                    continue
                error = translate(exc, what)
            except requests.RequestException as exc:
                raise translate(exc, what) from None
            if (
                not isinstance(error, GitHubRateLimited)
                or error.retry_after > INLINE_WAIT_MAX
                or waits >= INLINE_WAITS
            ):
                raise error from None
            waits += 1
            time.sleep(error.retry_after)

    def client(self, installation_id: int, *, refresh: bool = False) -> Github:
        """An API client acting as the installation."""
        return Github(
            auth=Auth.Token(self.installation_token(installation_id, refresh=refresh)),
            base_url=self.api_url,
            timeout=TIMEOUT,
            per_page=PER_PAGE,
            retry=None,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
