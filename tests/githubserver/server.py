"""A small GitHub REST API and git smart-HTTP server for tests, backed by bare repositories.

`GitHubState` holds everything (seed it, then inspect what the code under test recorded);
`create_github_server(state)` is the Flask app; `GitHubServer` runs it on 127.0.0.1.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import gzip
import itertools
import json
import math
import os
import re
import secrets
import string
import subprocess
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, jsonify, redirect, request
from werkzeug import Response as BaseResponse
from werkzeug.exceptions import HTTPException

from tests.githubserver import repos
from tests.support.live import LiveServer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

Json = dict[str, Any]

DOCS_URL = "https://docs.github.com/rest"
APP_SLUG = "portside-test"
APP_OWNER = "portside"
CREATED = "2024-01-01T00:00:00Z"
JWT_LEEWAY_SECONDS = 60
JWT_MAX_LIFETIME_SECONDS = 600
DEFAULT_PERMISSIONS = {
    "contents": "read",
    "metadata": "read",
    "deployments": "write",
    "statuses": "write",
    "pull_requests": "write",
    "issues": "write",
    "checks": "write",
}
_LEVELS = ("read", "write", "admin")
# GitHub's list endpoints: 30 items a page unless per_page says otherwise, 100 at most.
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
EMPTY_REPOSITORY = "This repository is empty."
SECONDARY_RATE_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
    "again. If you reach out to GitHub Support for help, please include the request ID."
)
RATE_LIMIT = 5000
DEPLOYMENT_STATES = {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
COMMIT_STATES = {"error", "failure", "pending", "success"}
CHECK_STATUSES = {"queued", "in_progress", "completed", "waiting", "requested", "pending"}
CHECK_CONCLUSIONS = {
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
}
# GitHub's limit on a check run's output summary and text, in characters.
CHECK_OUTPUT_MAX = 65535
# A check run's requested actions: at most 3, label and identifier 20 characters at most,
# description 40.
CHECK_ACTIONS_MAX = 3
CHECK_ACTION_LIMITS = {"label": 20, "description": 40, "identifier": 20}
REACTIONS = {"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"}
# A collaborator's role and the permission GET .../collaborators/{user}/permission reports
# for it (maintain counts as write, triage as read).
ROLE_PERMISSIONS = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
}


def generate_private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_id(kind: str, number: int) -> str:
    return base64.b64encode(f"0:{kind}{number}".encode()).decode()


def _stable_id(name: str) -> int:
    return zlib.crc32(name.lower().encode())


@dataclass(slots=True)
class Installation:
    id: int
    account_login: str
    account_type: str = "User"
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PERMISSIONS))
    suspended_at: datetime | None = None


@dataclass(slots=True)
class Repository:
    installation_id: int
    owner: str
    name: str
    path: Path
    default_branch: str = "main"
    private: bool = True

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def id(self) -> int:
        return _stable_id(self.full_name)


@dataclass(slots=True)
class InstallationToken:
    token: str
    installation_id: int
    expires_at: datetime
    permissions: dict[str, str]
    repositories: frozenset[str] | None = None  # lowercased full names; None: all of them
    revoked: bool = False

    def grants(self, repo: Repository) -> bool:
        return repo.installation_id == self.installation_id and (
            self.repositories is None or repo.full_name.lower() in self.repositories
        )

    def allows(self, permission: str, level: str) -> bool:
        """Whether the token was minted with ``permission`` at ``level`` or above (every
        token reads metadata, as on GitHub)."""
        if permission == "metadata" and level == "read":
            return True
        held = self.permissions.get(permission)
        return held is not None and _LEVELS.index(held) >= _LEVELS.index(level)


@dataclass(slots=True)
class PullRequest:
    repo: str
    number: int
    head_ref: str
    head_sha: str
    base_ref: str
    head_full_name: str
    state: str = "open"
    title: str = ""
    body: str = ""
    user_login: str = "octocat"
    merged: bool = False


@dataclass(slots=True)
class Deployment:
    id: int
    repo: str
    sha: str
    ref: str
    task: str
    environment: str
    description: str | None
    payload: Any
    transient_environment: bool
    production_environment: bool
    auto_merge: bool
    required_contexts: list[str] | None
    created_at: datetime
    # Another account that created it (a person, another App's bot); "" is the App's bot.
    creator: str = ""


@dataclass(slots=True)
class DeploymentStatus:
    id: int
    deployment_id: int
    repo: str
    state: str
    environment: str
    description: str
    log_url: str
    environment_url: str
    created_at: datetime


@dataclass(slots=True)
class CommitStatus:
    id: int
    repo: str
    sha: str
    state: str
    target_url: str | None
    description: str | None
    context: str
    created_at: datetime


@dataclass(slots=True)
class CheckRun:
    id: int
    repo: str
    head_sha: str
    name: str
    external_id: str
    details_url: str | None
    status: str
    conclusion: str | None
    started_at: datetime
    completed_at: datetime | None
    output: Json  # title, summary, text (None until written)
    check_suite_id: int
    app_id: int  # the App that made it: only that App may update it
    # The buttons offered with the run (label, description, identifier); GitHub keeps
    # them but does not show them in the run's JSON.
    actions: list[Json] = field(default_factory=list)


@dataclass(slots=True)
class IssueComment:
    id: int
    repo: str
    issue_number: int
    body: str
    created_at: datetime
    updated_at: datetime
    # Another Bot that wrote it (e.g. github-actions[bot]); "" is the App's bot.
    author: str = ""
    author_type: str = "Bot"  # "User" for a person's comment


@dataclass(slots=True)
class CommitComment:
    id: int
    repo: str
    sha: str
    body: str
    author: str
    created_at: datetime


@dataclass(slots=True)
class Reaction:
    id: int
    repo: str
    subject: str  # "issue_comment" or "commit_comment"
    comment_id: int
    content: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class GitRequest:
    method: str
    path: str
    user: str | None  # the Basic auth user name; None for a bearer token or no auth
    token: str | None  # the credential sent, valid or not
    status: int


@dataclass(slots=True)
class Fault:
    """An injected failure: matching requests are answered ``status`` with ``message`` and
    ``headers``, either instead of acting or (``after``) once the server has acted, the
    way a lost response looks to a client. ``times`` matching requests fail, or, with
    ``each_once``, the first of every distinct request (method, path and body)."""

    status: int
    message: str
    method: str = "WRITE"  # an HTTP method, "WRITE" (POST/PATCH/PUT/DELETE) or "*"
    path: str = "*"  # an fnmatch pattern over the request path
    after: bool = False
    times: int = 1
    each_once: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    seen: set[tuple[str, str, bytes]] = field(default_factory=set)
    failed: int = 0  # requests answered with this fault so far

    def matches(self, method: str, path: str) -> bool:
        wanted = self.method.upper()
        if wanted == "WRITE":  # API writes; a git fetch POSTs too but writes nothing
            method_ok = method in WRITE_METHODS and not path.endswith("/git-upload-pack")
        else:
            method_ok = wanted in ("*", method)
        return method_ok and fnmatch.fnmatchcase(path, self.path)

    def take(self, method: str, path: str, body: bytes) -> bool:
        """Whether this request fails (and count it)."""
        if not self.matches(method, path):
            return False
        if self.each_once:
            key = (method, path, body)
            if key in self.seen:
                return False
            self.seen.add(key)
        elif self.failed >= self.times:
            return False
        self.failed += 1
        return True


class GitHubError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GitHubState:
    """Everything the test server knows. Seed it directly; inspect the recorded lists."""

    def __init__(self, root: Path, app_id: int, private_key_pem: str) -> None:
        self.git_root = root / "git"
        self.app_id = app_id
        self.private_key_pem = private_key_pem
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("a GitHub App key is an RSA key")
        self.public_key = key.public_key()
        self.token_lifetime = timedelta(hours=1)
        self.installations: dict[int, Installation] = {}
        self.repositories: dict[str, Repository] = {}  # by lowercased full name
        self.pull_requests: dict[tuple[str, int], PullRequest] = {}  # (lowercased repo, number)
        self.tokens: list[InstallationToken] = []  # every token issued, in order
        self.deployments: list[Deployment] = []
        self.deployment_statuses: list[DeploymentStatus] = []
        self.statuses: list[CommitStatus] = []
        self.check_runs: list[CheckRun] = []
        self.comments: list[IssueComment] = []
        self.commit_comments: list[CommitComment] = []
        self.reactions: list[Reaction] = []  # the App's reactions to comments
        # (lowercased repo, lowercased login) -> role: admin, maintain, write, triage, read
        self.collaborators: dict[tuple[str, str], str] = {}
        self.git_requests: list[GitRequest] = []
        self.api_requests: list[tuple[str, str]] = []  # (method, path?query), in order
        self.faults: list[Fault] = []
        # The App manifest flow: one-time codes GitHub hands back after a person confirmed a
        # manifest (code -> (manifest, owner login, issued at)), and the Apps converted.
        self.manifest_codes: dict[str, tuple[Json, str, datetime]] = {}
        self.registered_apps: list[Json] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def become_app(self, app_id: int, private_key_pem: str) -> None:
        """From now on this server is App ``app_id``: only its JWTs are accepted."""
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("a GitHub App key is an RSA key")
        self.app_id, self.private_key_pem = app_id, private_key_pem
        self.public_key = key.public_key()

    def add_installation(
        self, installation_id: int, account_login: str, account_type: str = "User"
    ) -> Installation:
        installation = Installation(installation_id, account_login, account_type)
        self.installations[installation_id] = installation
        return installation

    def suspend_installation(self, installation_id: int) -> None:
        self.installations[installation_id].suspended_at = _now()

    def add_repository(
        self, installation_id: int, full_name: str, default_branch: str = "main"
    ) -> Repository:
        if installation_id not in self.installations:
            raise KeyError(f"no installation {installation_id}")
        owner, name = full_name.split("/")
        path = self.git_root / owner / f"{name}.git"
        repo = Repository(installation_id, owner, name, path, default_branch)
        if not repo.path.exists():
            repos.init_bare_repo(repo.path, default_branch)
        self.repositories[full_name.lower()] = repo
        return repo

    def remove_repository(self, full_name: str) -> None:
        """Take the repository out of its installation (the git data stays on disk)."""
        del self.repositories[full_name.lower()]

    def repository(self, full_name: str) -> Repository:
        return self.repositories[full_name.lower()]

    def commit(
        self,
        full_name: str,
        files: Mapping[str, str | bytes | None],
        branch: str | None = None,
        message: str = "Update files",
    ) -> str:
        """Commit files to a branch (a new one starts from the default branch); return SHA."""
        repo = self.repository(full_name)
        branch = branch or repo.default_branch
        return repos.commit_files(repo.path, branch, files, message, base=repo.default_branch)

    def delete_branch(self, full_name: str, branch: str) -> None:
        repos.delete_branch(self.repository(full_name).path, branch)

    def add_pull_request(
        self,
        full_name: str,
        number: int,
        head_ref: str,
        *,
        head_sha: str | None = None,
        base_ref: str | None = None,
        state: str = "open",
        title: str = "",
        user_login: str = "octocat",
        head_full_name: str | None = None,
    ) -> PullRequest:
        """Seed a pull request; head_sha defaults to the head branch's tip in this repo."""
        repo = self.repository(full_name)
        sha = head_sha or repos.resolve_commit(repo.path, f"refs/heads/{head_ref}")
        if sha is None:
            raise ValueError(f"no branch {head_ref} in {full_name}; pass head_sha")
        pull = PullRequest(
            repo.full_name,
            number,
            head_ref,
            sha,
            base_ref or repo.default_branch,
            head_full_name or repo.full_name,
            state=state,
            title=title or f"Pull request {number}",
            user_login=user_login,
        )
        self.pull_requests[(full_name.lower(), number)] = pull
        return pull

    def add_collaborator(self, full_name: str, login: str, role: str) -> None:
        """Give ``login`` a role on the repository (admin, maintain, write, triage, read)."""
        if role not in ROLE_PERMISSIONS:
            raise ValueError(f"no role {role}")
        self.collaborators[(full_name.lower(), login.lower())] = role

    def add_issue_comment(
        self, full_name: str, number: int, body: str, author: str
    ) -> IssueComment:
        """A person's comment on issue or pull request ``number``."""
        now = _now()
        comment = IssueComment(
            self.next_id(),
            self.repository(full_name).full_name,
            number,
            body,
            now,
            now,
            author,
            "User",
        )
        self.comments.append(comment)
        return comment

    def add_commit_comment(self, full_name: str, sha: str, body: str, author: str) -> CommitComment:
        """A person's comment on commit ``sha``."""
        repo = self.repository(full_name)
        comment = CommitComment(self.next_id(), repo.full_name, sha, body, author, _now())
        self.commit_comments.append(comment)
        return comment

    def issue_token(
        self,
        installation_id: int,
        permissions: dict[str, str] | None = None,
        repositories: frozenset[str] | None = None,
    ) -> InstallationToken:
        """Mint a token as POST /app/installations/{id}/access_tokens does (counted in
        `tokens`); `repositories` are lowercased full names, None for all of them."""
        alphabet = string.ascii_letters + string.digits
        token = InstallationToken(
            "ghs_" + "".join(secrets.choice(alphabet) for _ in range(36)),
            installation_id,
            _now() + self.token_lifetime,
            permissions or dict(self.installations[installation_id].permissions),
            repositories,
        )
        self.tokens.append(token)
        return token

    def revoke_tokens(self) -> None:
        for token in self.tokens:
            token.revoked = True

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (GitHub then answers 401 Bad credentials)."""
        for token in self.tokens:
            token.expires_at = _now() - timedelta(seconds=1)

    def check_run_payload(
        self, check_run: CheckRun, action: str, base: str, identifier: str | None = None
    ) -> Json:
        """A ``check_run`` webhook payload as GitHub sends the App (``rerequested`` when a
        person clicks "Re-run" on the run, ``requested_action`` with the ``identifier`` of
        the action button clicked, ``created``...)."""
        repo = self.repository(check_run.repo)
        payload: Json = {
            "action": action,
            "check_run": _check_run(self, check_run, base),
            "repository": repository_json(self, repo, base),
            "sender": _user("octocat", base),
            "installation": {
                "id": repo.installation_id,
                "node_id": _node_id("Installation", repo.installation_id),
            },
        }
        if identifier is not None:
            payload["requested_action"] = {"identifier": identifier}
        return payload

    def add_check_run(
        self,
        full_name: str,
        sha: str,
        name: str,
        *,
        app_id: int,
        status: str = "queued",
        conclusion: str | None = None,
    ) -> CheckRun:
        """Another App's Check Run on a commit (a CI's), as that App creates it (completed
        when given a ``conclusion``); change its ``status`` and ``conclusion`` on the
        returned run."""
        repo = self.repository(full_name)
        suite = next(
            (
                r.check_suite_id
                for r in self.check_runs
                if (r.repo, r.head_sha, r.app_id) == (repo.full_name, sha, app_id)
            ),
            None,
        )
        run = CheckRun(
            id=self.next_id(),
            repo=repo.full_name,
            head_sha=sha,
            name=name,
            external_id="",
            details_url=None,
            status="completed" if conclusion else status,
            conclusion=conclusion,
            started_at=_now(),
            completed_at=_now() if conclusion else None,
            output={},
            check_suite_id=suite or self.next_id(),
            app_id=app_id,
        )
        self.check_runs.append(run)
        return run

    def add_commit_status(self, full_name: str, sha: str, context: str, state: str) -> CommitStatus:
        """A commit status another integration (a CI) set on a commit."""
        if state not in COMMIT_STATES:
            raise ValueError(f"not a commit status state: {state}")
        status = CommitStatus(
            id=self.next_id(),
            repo=self.repository(full_name).full_name,
            sha=sha,
            state=state,
            target_url=None,
            description=None,
            context=context,
            created_at=_now(),
        )
        self.statuses.append(status)
        return status

    def _event_common(self, repo: Repository, base: str) -> Json:
        return {
            "repository": repository_json(self, repo, base),
            "sender": _user("octocat", base),
            "installation": {
                "id": repo.installation_id,
                "node_id": _node_id("Installation", repo.installation_id),
            },
        }

    def check_suite_payload(self, full_name: str, sha: str, app_id: int, base: str) -> Json:
        """A ``check_suite`` ``completed`` payload for the suite of ``app_id``'s runs on
        ``sha`` (GitHub sends it to every App subscribed to check suites)."""
        repo = self.repository(full_name)
        runs = [
            r
            for r in self.check_runs
            if (r.repo, r.head_sha, r.app_id) == (repo.full_name, sha, app_id)
        ]
        if not runs:
            raise ValueError(f"no check runs of app {app_id} on {sha}")
        conclusions = {r.conclusion for r in runs}
        conclusion = next(
            (
                c
                for c in ("action_required", "cancelled", "timed_out", "failure")
                if c in conclusions
            ),
            "success",
        )
        info = repos.commit_info(repo.path, sha)
        api = f"{base}/repos/{repo.full_name}"
        suite = runs[0].check_suite_id
        person = {"name": info.author_name, "email": info.author_email}
        return {
            "action": "completed",
            "check_suite": {
                "id": suite,
                "node_id": _node_id("CheckSuite", suite),
                "head_branch": repo.default_branch,
                "head_sha": sha,
                "status": "completed",
                "conclusion": conclusion,
                "url": f"{api}/check-suites/{suite}",
                "before": None,
                "after": sha,
                "pull_requests": [],
                "app": _app_json(self, app_id, base),
                "created_at": _iso(min(r.started_at for r in runs)),
                "updated_at": _iso(_now()),
                "rerequestable": True,
                "runs_rerequestable": True,
                "latest_check_runs_count": len(runs),
                "check_runs_url": f"{api}/check-suites/{suite}/check-runs",
                "head_commit": {
                    "id": sha,
                    "tree_id": info.tree,
                    "message": info.message,
                    "timestamp": _iso(datetime.fromisoformat(info.committer_date)),
                    "author": person,
                    "committer": {"name": info.committer_name, "email": info.committer_email},
                },
            },
        } | self._event_common(repo, base)

    def status_payload(self, status: CommitStatus, base: str) -> Json:
        """A ``status`` webhook payload for a commit status as GitHub sends it."""
        repo = self.repository(status.repo)
        commit = _commit(repo, repos.commit_info(repo.path, status.sha), base)
        del commit["files"]
        return {
            "id": status.id,
            "sha": status.sha,
            "name": repo.full_name,
            "target_url": status.target_url,
            "avatar_url": None,
            "context": status.context,
            "description": status.description,
            "state": status.state,
            "commit": commit,
            "branches": [],
            "created_at": _iso(status.created_at),
            "updated_at": _iso(status.created_at),
        } | self._event_common(repo, base)

    def fail(
        self,
        path: str = "*",
        *,
        method: str = "WRITE",
        status: int = 502,
        after: bool = False,
        times: int = 1,
    ) -> Fault:
        """Make ``times`` matching requests answer ``status`` (a 5xx by default), before
        acting or ``after`` it."""
        message = "Server Error" if status >= 500 else "Injected failure"
        fault = Fault(status, message, method, path, after, times)
        self.faults.append(fault)
        return fault

    def fail_each_write_once(self, *, after: bool) -> Fault:
        """Every distinct write (method, path, body) fails the first time, with a 502
        sent instead of acting or ``after`` acting."""
        fault = Fault(502, "Server Error", after=after, each_once=True)
        self.faults.append(fault)
        return fault

    def rate_limit(
        self,
        path: str = "*",
        *,
        method: str = "*",
        retry_after: int | None = 1,
        primary: bool = False,
        status: int = 403,
        times: int = 1,
    ) -> Fault:
        """Answer ``times`` matching requests as GitHub does past a rate limit: the
        secondary one (403 or 429 with ``Retry-After``) or, ``primary``, the hourly one
        (``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` ``retry_after`` seconds on)."""
        reset = int(_now().timestamp()) + (retry_after or 60)
        headers = {
            "x-ratelimit-limit": str(RATE_LIMIT),
            "x-ratelimit-remaining": "0" if primary else str(RATE_LIMIT - 1),
            "x-ratelimit-used": str(RATE_LIMIT if primary else 1),
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-resource": "core",
        }
        if retry_after is not None and not primary:
            headers["Retry-After"] = str(retry_after)
        message = (
            "API rate limit exceeded for installation. If you reach out to GitHub Support "
            "for help, please include the request ID."
            if primary
            else SECONDARY_RATE_LIMIT
        )
        fault = Fault(status, message, method, path, times=times, headers=headers)
        self.faults.append(fault)
        return fault

    def fault_for(self, method: str, path: str, body: bytes, *, after: bool) -> Fault | None:
        with self._lock:
            return next(
                (f for f in self.faults if f.after == after and f.take(method, path, body)),
                None,
            )

    def valid_token(self, value: str) -> InstallationToken | None:
        now = datetime.now(UTC)
        return next(
            (t for t in self.tokens if t.token == value and not t.revoked and t.expires_at > now),
            None,
        )


# ---- JSON renderings, with every URL under `base` (the server's own URL) ----


def _user(login: str, base: str, kind: str = "User") -> Json:
    user_id = _stable_id(login)
    return {
        "login": login,
        "id": user_id,
        "node_id": _node_id(kind, user_id),
        "type": kind,
        "site_admin": False,
        "url": f"{base}/users/{quote(login)}",
        "html_url": f"{base}/{quote(login)}",
        "avatar_url": f"{base}/avatars/{quote(login)}",
    }


def _bot(base: str) -> Json:
    return _user(f"{APP_SLUG}[bot]", base, "Bot")


def _app(state: GitHubState, base: str) -> Json:
    return {
        "id": state.app_id,
        "slug": APP_SLUG,
        "node_id": _node_id("App", state.app_id),
        "name": "Portside (test)",
        "description": "",
        "owner": _user(APP_OWNER, base, "Organization"),
        "external_url": base,
        "html_url": f"{base}/apps/{APP_SLUG}",
        "created_at": CREATED,
        "updated_at": CREATED,
        "permissions": DEFAULT_PERMISSIONS,
        "events": ["push", "pull_request"],
        "installations_count": len(state.installations),
    }


def _app_json(state: GitHubState, app_id: int, base: str) -> Json:
    """The App ``app_id``: this server's own, or another one (a CI's, seeded by a test)."""
    app = _app(state, base)
    if app_id != state.app_id:
        slug = f"app-{app_id}"
        app |= {"id": app_id, "slug": slug, "node_id": _node_id("App", app_id)}
    return app


def _installation(state: GitHubState, inst: Installation, base: str) -> Json:
    account = _user(inst.account_login, base, inst.account_type)
    return {
        "id": inst.id,
        "account": account,
        "app_id": state.app_id,
        "app_slug": APP_SLUG,
        "target_id": account["id"],
        "target_type": inst.account_type,
        "repository_selection": "selected",
        "access_tokens_url": f"{base}/app/installations/{inst.id}/access_tokens",
        "repositories_url": f"{base}/installation/repositories",
        "html_url": f"{base}/settings/installations/{inst.id}",
        "permissions": inst.permissions,
        "events": ["push", "pull_request"],
        "created_at": CREATED,
        "updated_at": CREATED,
        "single_file_name": None,
        "suspended_at": _iso(inst.suspended_at) if inst.suspended_at else None,
        "suspended_by": _user("octocat", base) if inst.suspended_at else None,
    }


def repository_json(state: GitHubState, repo: Repository, base: str) -> Json:
    """A repository as GitHub renders it (also what webhook payloads carry)."""
    inst = state.installations[repo.installation_id]
    owner_type = inst.account_type if inst.account_login == repo.owner else "User"
    api = f"{base}/repos/{repo.full_name}"
    return {
        "id": repo.id,
        "node_id": _node_id("Repository", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "owner": _user(repo.owner, base, owner_type),
        "private": repo.private,
        "visibility": "private" if repo.private else "public",
        "fork": False,
        "archived": False,
        "disabled": False,
        "description": None,
        "default_branch": repo.default_branch,
        "url": api,
        "html_url": f"{base}/{repo.full_name}",
        "clone_url": f"{base}/{repo.full_name}.git",
        "deployments_url": f"{api}/deployments",
        "statuses_url": f"{api}/statuses/{{sha}}",
        "pulls_url": f"{api}/pulls{{/number}}",
        "contents_url": f"{api}/contents/{{+path}}",
        "created_at": CREATED,
        "updated_at": CREATED,
        "pushed_at": CREATED,
        "permissions": {"admin": False, "maintain": False, "push": False, "pull": True},
    }


def _commit(repo: Repository, info: repos.CommitInfo, base: str) -> Json:
    api = f"{base}/repos/{repo.full_name}"

    def person(name: str, email: str, date: str) -> Json:
        return {"name": name, "email": email, "date": _iso(datetime.fromisoformat(date))}

    return {
        "sha": info.sha,
        "node_id": _node_id("Commit", _stable_id(info.sha)),
        "url": f"{api}/commits/{info.sha}",
        "html_url": f"{base}/{repo.full_name}/commit/{info.sha}",
        "comments_url": f"{api}/commits/{info.sha}/comments",
        "commit": {
            "url": f"{api}/git/commits/{info.sha}",
            "author": person(info.author_name, info.author_email, info.author_date),
            "committer": person(info.committer_name, info.committer_email, info.committer_date),
            "message": info.message,
            "tree": {"sha": info.tree, "url": f"{api}/git/trees/{info.tree}"},
            "comment_count": 0,
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
            },
        },
        "author": None,
        "committer": None,
        "parents": [
            {
                "sha": sha,
                "url": f"{api}/commits/{sha}",
                "html_url": f"{base}/{repo.full_name}/commit/{sha}",
            }
            for sha in info.parents
        ],
        "files": [],
    }


def _content(
    repo: Repository, entry: repos.TreeEntry, ref: str, base: str, data: bytes | None = None
) -> Json:
    kind = {"blob": "file", "tree": "dir", "commit": "submodule"}[entry.kind]
    api = f"{base}/repos/{repo.full_name}"
    url = f"{api}/contents/{quote(entry.path)}?ref={quote(ref, safe='')}"
    git_url = f"{api}/git/{'trees' if entry.kind == 'tree' else 'blobs'}/{entry.sha}"
    view = "tree" if entry.kind == "tree" else "blob"
    html_url = f"{base}/{repo.full_name}/{view}/{quote(ref)}/{quote(entry.path)}"
    rendered: Json = {
        "type": kind,
        "size": entry.size,
        "name": entry.path.rpartition("/")[2],
        "path": entry.path,
        "sha": entry.sha,
        "url": url,
        "git_url": git_url,
        "html_url": html_url,
        "download_url": None,
        "_links": {"self": url, "git": git_url, "html": html_url},
    }
    if data is not None:
        rendered |= {"encoding": "base64", "content": base64.encodebytes(data).decode()}
    return rendered


def _pull(state: GitHubState, pull: PullRequest, base: str) -> Json:
    repo = state.repository(pull.repo)
    api = f"{base}/repos/{repo.full_name}"
    pull_id = _stable_id(f"{repo.full_name}#{pull.number}")
    head_repo = state.repositories.get(pull.head_full_name.lower())
    if head_repo is None:  # a fork outside the installation
        owner, name = pull.head_full_name.split("/")
        head_repo = Repository(repo.installation_id, owner, name, Path(os.devnull), private=False)
    base_sha = repos.resolve_commit(repo.path, f"refs/heads/{pull.base_ref}")
    closed = pull.state == "closed"

    def side(ref: str, sha: str | None, side_repo: Repository) -> Json:
        return {
            "label": f"{side_repo.owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": _user(side_repo.owner, base),
            "repo": repository_json(state, side_repo, base),
        }

    return {
        "url": f"{api}/pulls/{pull.number}",
        "id": pull_id,
        "node_id": _node_id("PullRequest", pull_id),
        "html_url": f"{base}/{repo.full_name}/pull/{pull.number}",
        "issue_url": f"{api}/issues/{pull.number}",
        "comments_url": f"{api}/issues/{pull.number}/comments",
        "statuses_url": f"{api}/statuses/{pull.head_sha}",
        "number": pull.number,
        "state": pull.state,
        "locked": False,
        "draft": False,
        "title": pull.title,
        "body": pull.body,
        "user": _user(pull.user_login, base),
        "created_at": CREATED,
        "updated_at": CREATED,
        "closed_at": CREATED if closed else None,
        "merged_at": CREATED if pull.merged else None,
        "merged": pull.merged,
        "head": side(pull.head_ref, pull.head_sha, head_repo),
        "base": side(pull.base_ref, base_sha, repo),
    }


def _issue(state: GitHubState, pull: PullRequest, base: str) -> Json:
    """A pull request seen through the issues API."""
    rendered = _pull(state, pull, base)
    shared = "id node_id number state title body user locked comments_url created_at updated_at"
    return {k: rendered[k] for k in shared.split()} | {
        "url": rendered["issue_url"],
        "html_url": rendered["html_url"],
        "closed_at": rendered["closed_at"],
        "labels": [],
        "comments": sum(
            c.repo == pull.repo and c.issue_number == pull.number for c in state.comments
        ),
        "pull_request": {"url": rendered["url"], "html_url": rendered["html_url"]},
    }


def _deployment(state: GitHubState, dep: Deployment, base: str) -> Json:
    api = f"{base}/repos/{dep.repo}"
    return {
        "url": f"{api}/deployments/{dep.id}",
        "id": dep.id,
        "node_id": _node_id("Deployment", dep.id),
        "sha": dep.sha,
        "ref": dep.ref,
        "task": dep.task,
        "payload": dep.payload,
        "original_environment": dep.environment,
        "environment": dep.environment,
        "description": dep.description,
        "creator": _user(dep.creator, base, "Bot") if dep.creator else _bot(base),
        "created_at": _iso(dep.created_at),
        "updated_at": _iso(dep.created_at),
        "statuses_url": f"{api}/deployments/{dep.id}/statuses",
        "repository_url": api,
        "transient_environment": dep.transient_environment,
        "production_environment": dep.production_environment,
        "performed_via_github_app": None if dep.creator else _app(state, base),
    }


def _deployment_status(state: GitHubState, status: DeploymentStatus, base: str) -> Json:
    api = f"{base}/repos/{status.repo}"
    return {
        "url": f"{api}/deployments/{status.deployment_id}/statuses/{status.id}",
        "id": status.id,
        "node_id": _node_id("DeploymentStatus", status.id),
        "state": status.state,
        "creator": _bot(base),
        "description": status.description,
        "environment": status.environment,
        "target_url": status.log_url,
        "log_url": status.log_url,
        "environment_url": status.environment_url,
        "created_at": _iso(status.created_at),
        "updated_at": _iso(status.created_at),
        "deployment_url": f"{api}/deployments/{status.deployment_id}",
        "repository_url": api,
        "performed_via_github_app": _app(state, base),
    }


def _commit_status(status: CommitStatus, base: str) -> Json:
    return {
        "url": f"{base}/repos/{status.repo}/statuses/{status.sha}",
        "avatar_url": f"{base}/avatars/{APP_SLUG}",
        "id": status.id,
        "node_id": _node_id("StatusContext", status.id),
        "state": status.state,
        "description": status.description,
        "target_url": status.target_url,
        "context": status.context,
        "created_at": _iso(status.created_at),
        "updated_at": _iso(status.created_at),
        "creator": _bot(base),
    }


def _check_run(state: GitHubState, run: CheckRun, base: str) -> Json:
    api = f"{base}/repos/{run.repo}"
    app = _app_json(state, run.app_id, base)
    suite_status = "completed" if run.status == "completed" else run.status
    return {
        "id": run.id,
        "node_id": _node_id("CheckRun", run.id),
        "head_sha": run.head_sha,
        "external_id": run.external_id,
        "url": f"{api}/check-runs/{run.id}",
        "html_url": f"{base}/{run.repo}/runs/{run.id}",
        "details_url": run.details_url,
        "status": run.status,
        "conclusion": run.conclusion,
        "started_at": _iso(run.started_at),
        "completed_at": _iso(run.completed_at) if run.completed_at else None,
        "output": {
            "title": run.output.get("title"),
            "summary": run.output.get("summary"),
            "text": run.output.get("text"),
            "annotations_count": 0,
            "annotations_url": f"{api}/check-runs/{run.id}/annotations",
        },
        "name": run.name,
        "check_suite": {
            "id": run.check_suite_id,
            "node_id": _node_id("CheckSuite", run.check_suite_id),
            "head_branch": None,
            "head_sha": run.head_sha,
            "status": suite_status,
            "conclusion": run.conclusion,
            "url": f"{api}/check-suites/{run.check_suite_id}",
            "before": None,
            "after": run.head_sha,
            "pull_requests": [],
            "app": app,
            "created_at": _iso(run.started_at),
            "updated_at": _iso(run.completed_at or run.started_at),
        },
        "app": app,
        "pull_requests": [],
    }


def _comment(state: GitHubState, comment: IssueComment, base: str) -> Json:
    api = f"{base}/repos/{comment.repo}"
    return {
        "id": comment.id,
        "node_id": _node_id("IssueComment", comment.id),
        "url": f"{api}/issues/comments/{comment.id}",
        "html_url": f"{base}/{comment.repo}/pull/{comment.issue_number}#issuecomment-{comment.id}",
        "issue_url": f"{api}/issues/{comment.issue_number}",
        "body": comment.body,
        "user": _user(comment.author, base, comment.author_type) if comment.author else _bot(base),
        "author_association": "NONE",
        "created_at": _iso(comment.created_at),
        "updated_at": _iso(comment.updated_at),
        "performed_via_github_app": None if comment.author else _app(state, base),
    }


# ---- the app ----


def create_github_server(state: GitHubState) -> Flask:
    app = Flask(__name__)

    def base() -> str:
        return request.host_url.rstrip("/")

    def body() -> Json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise GitHubError(400, "Problems parsing JSON")
        return data

    def page_of(items: list[Any]) -> tuple[list[Any], dict[str, str]]:
        """One page of ``items`` as GitHub serves lists: ``per_page`` (30 by default, 100
        at most) and ``page`` from the query, the others in a ``Link`` header."""
        try:
            per_page = min(MAX_PER_PAGE, max(1, int(request.args.get("per_page", ""))))
        except ValueError:
            per_page = DEFAULT_PER_PAGE
        try:
            page = max(1, int(request.args.get("page", "")))
        except ValueError:
            page = 1
        last = max(1, math.ceil(len(items) / per_page))
        query = request.args.to_dict()

        def link(number: int, rel: str) -> str:
            params = urlencode(query | {"per_page": per_page, "page": number})
            return f'<{request.base_url}?{params}>; rel="{rel}"'

        links = []
        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        chunk = items[(page - 1) * per_page : page * per_page]
        return chunk, {"Link": ", ".join(links)} if links else {}

    def paged(items: list[Json]) -> Response:
        chunk, headers = page_of(items)
        response = jsonify(chunk)
        response.headers.update(headers)
        return response

    def fault_response(fault: Fault) -> Response:
        payload = {"message": fault.message, "documentation_url": DOCS_URL}
        response = jsonify(payload | {"status": str(fault.status)})
        response.status_code = fault.status
        response.headers.update(fault.headers)
        return response

    @app.before_request
    def fail_before() -> Response | None:
        state.api_requests.append((request.method, request.full_path.rstrip("?")))
        fault = state.fault_for(request.method, request.path, request.get_data(), after=False)
        return fault_response(fault) if fault else None

    @app.after_request
    def fail_after(response: BaseResponse) -> BaseResponse:
        if response.status_code >= 400:
            return response
        fault = state.fault_for(request.method, request.path, request.get_data(), after=True)
        return fault_response(fault) if fault else response

    def require_app_jwt() -> None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise GitHubError(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(
                value,
                state.public_key,
                algorithms=["RS256"],
                leeway=JWT_LEEWAY_SECONDS,
                options={"require": ["iat", "exp", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise GitHubError(401, "'Expiration time' claim ('exp') is in the past") from exc
        except jwt.PyJWTError as exc:
            raise GitHubError(401, f"A JSON web token could not be decoded: {exc}") from exc
        if str(claims["iss"]) != str(state.app_id):
            raise GitHubError(401, "'Issuer' claim ('iss') does not name this app")
        if claims["exp"] - claims["iat"] > JWT_MAX_LIFETIME_SECONDS:
            raise GitHubError(401, "'Expiration time' claim ('exp') is too far in the future")

    def require_token() -> InstallationToken:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer") or not value:
            raise GitHubError(401, "Requires authentication")
        token = state.valid_token(value)
        if token is None:
            raise GitHubError(401, "Bad credentials")
        if state.installations[token.installation_id].suspended_at:
            raise GitHubError(403, "This installation has been suspended")
        return token

    def repo_for(
        owner: str, name: str, permission: str = "metadata", level: str = "read"
    ) -> Repository:
        """The repository, as GitHub shows it to this token: 404 outside the token's
        repositories, 403 when the token lacks ``permission`` at ``level``."""
        token = require_token()
        repo = state.repositories.get(f"{owner}/{name}".lower())
        if repo is None or not token.grants(repo):
            raise GitHubError(404, "Not Found")
        if not token.allows(permission, level):
            raise GitHubError(403, "Resource not accessible by integration")
        return repo

    def installation(installation_id: int) -> Installation:
        inst = state.installations.get(installation_id)
        if inst is None:
            raise GitHubError(404, "Not Found")
        return inst

    def not_empty(repo: Repository) -> None:
        """GitHub answers 404 "This repository is empty." for the contents of a
        repository without commits."""
        if repos.is_empty(repo.path):
            raise GitHubError(404, EMPTY_REPOSITORY)

    def commit_sha(repo: Repository, ref: str) -> str:
        sha = repos.resolve_commit(repo.path, ref)
        if sha is None:
            raise GitHubError(404, f"No commit found for the ref {ref}")
        return sha

    def pull_request(repo: Repository, number: int) -> PullRequest:
        pull = state.pull_requests.get((repo.full_name.lower(), number))
        if pull is None:
            raise GitHubError(404, "Not Found")
        return pull

    def deployment(repo: Repository, deployment_id: int) -> Deployment:
        found = next((d for d in state.deployments if d.id == deployment_id), None)
        if found is None or found.repo != repo.full_name:
            raise GitHubError(404, "Not Found")
        return found

    @app.errorhandler(GitHubError)
    def github_error(error: GitHubError) -> tuple[Response, int]:
        payload = {"message": error.message, "documentation_url": DOCS_URL}
        return jsonify(payload | {"status": str(error.status)}), error.status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return github_error(GitHubError(error.code or 500, error.name))

    # -- the App manifest flow (GitHub's web pages, then the unauthenticated conversion) --

    @app.post("/settings/apps/new")
    @app.post("/organizations/<org>/settings/apps/new")
    def new_app_from_manifest(org: str | None = None) -> BaseResponse:
        """The page where a person confirms the manifest; here they always do, and GitHub
        sends the browser to the manifest's ``redirect_url`` with a code and the state."""
        try:
            manifest = json.loads(request.form.get("manifest", ""))
            redirect_url = str(manifest["redirect_url"])
            if not manifest.get("url") or not manifest["hook_attributes"]["url"]:
                raise KeyError("url")
        except (ValueError, KeyError, TypeError) as exc:
            raise GitHubError(422, f"Invalid manifest: {exc}") from exc
        code = secrets.token_hex(20)
        state.manifest_codes[code] = (manifest, org or APP_OWNER, _now())
        query = urlencode({"code": code, "state": request.args.get("state", "")})
        return redirect(f"{redirect_url}?{query}", 302)

    @app.post("/app-manifests/<code>/conversions")
    def convert_manifest(code: str) -> tuple[Json, int]:
        pending = state.manifest_codes.pop(code, None)
        if pending is None or _now() - pending[2] > timedelta(hours=1):
            raise GitHubError(404, "Not Found")
        manifest, owner, _issued = pending
        app_id = 900000 + state.next_id()
        pem = generate_private_key_pem()
        slug = re.sub(r"[^a-z0-9]+", "-", str(manifest.get("name", "app")).lower()).strip("-")
        answer = _app(state, base()) | {
            "id": app_id,
            "slug": slug,
            "node_id": _node_id("App", app_id),
            "name": manifest.get("name"),
            "owner": _user(owner, base(), "Organization"),
            "html_url": f"{base()}/apps/{slug}",
            "permissions": manifest.get("default_permissions", {}),
            "events": manifest.get("default_events", []),
            "installations_count": 0,
            "client_id": f"Iv1.{secrets.token_hex(8)}",
            "client_secret": secrets.token_hex(20),
            "webhook_secret": secrets.token_hex(20),
            "pem": pem,
        }
        state.become_app(app_id, pem)
        state.registered_apps.append(answer | {"manifest": manifest})
        return answer, 201

    # -- as the App (JWT) --

    @app.get("/app")
    def get_app() -> Json:
        require_app_jwt()
        return _app(state, base())

    @app.get("/app/installations")
    def list_installations() -> Response:
        require_app_jwt()
        return paged([_installation(state, i, base()) for i in state.installations.values()])

    @app.get("/app/installations/<int:installation_id>")
    def get_installation(installation_id: int) -> Json:
        require_app_jwt()
        return _installation(state, installation(installation_id), base())

    @app.get("/repos/<owner>/<name>/installation")
    def get_repo_installation(owner: str, name: str) -> Json:
        require_app_jwt()
        repo = state.repositories.get(f"{owner}/{name}".lower())
        if repo is None:
            raise GitHubError(404, "Not Found")
        return _installation(state, installation(repo.installation_id), base())

    @app.post("/app/installations/<int:installation_id>/access_tokens")
    def create_access_token(installation_id: int) -> tuple[Json, int]:
        require_app_jwt()
        inst = installation(installation_id)
        if inst.suspended_at:
            raise GitHubError(403, "This installation has been suspended")
        data = request.get_json(silent=True) or {}
        wanted: dict[str, str] = data.get("permissions") or {}
        for name, level in wanted.items():
            if inst.permissions.get(name) not in (level, "write"):
                raise GitHubError(
                    422, "The permissions requested are not granted to this installation."
                )
        chosen = None
        if "repositories" in data or "repository_ids" in data:
            own = [r for r in state.repositories.values() if r.installation_id == inst.id]
            names, ids = set(data.get("repositories", [])), set(data.get("repository_ids", []))
            chosen = [r for r in own if r.name in names or r.id in ids]
            if len(chosen) != len(names) + len(ids):
                raise GitHubError(
                    422,
                    "There is at least one repository that does not exist "
                    "or is not accessible to the parent installation.",
                )
        token = state.issue_token(
            inst.id,
            wanted or None,
            frozenset(r.full_name.lower() for r in chosen) if chosen is not None else None,
        )
        rendered: Json = {
            "token": token.token,
            "expires_at": _iso(token.expires_at),
            "permissions": token.permissions,
            "repository_selection": "selected",
        }
        if chosen is not None:
            rendered["repositories"] = [repository_json(state, r, base()) for r in chosen]
        return rendered, 201

    # -- as an installation (installation token) --

    @app.get("/installation/repositories")
    def installation_repositories() -> Response:
        token = require_token()
        found = [r for r in state.repositories.values() if token.grants(r)]
        chunk, headers = page_of(found)
        response = jsonify(
            {
                "total_count": len(found),
                "repository_selection": "selected",
                "repositories": [repository_json(state, r, base()) for r in chunk],
            }
        )
        response.headers.update(headers)
        return response

    @app.get("/repos/<owner>/<name>")
    def get_repo(owner: str, name: str) -> Json:
        return repository_json(state, repo_for(owner, name), base())

    @app.get("/repos/<owner>/<name>/contents", defaults={"path": ""})
    @app.get("/repos/<owner>/<name>/contents/", defaults={"path": ""})
    @app.get("/repos/<owner>/<name>/contents/<path:path>")
    def get_contents(owner: str, name: str, path: str) -> Json | Response:
        repo = repo_for(owner, name, "contents")
        not_empty(repo)
        ref = request.args.get("ref") or repo.default_branch
        sha = commit_sha(repo, ref)
        path = path.strip("/")
        entry = repos.find_entry(repo.path, sha, path)
        if path and entry is None:
            raise GitHubError(404, "Not Found")
        if entry is not None and entry.kind == "blob":
            return _content(repo, entry, ref, base(), repos.read_blob(repo.path, entry.sha))
        if entry is not None and entry.kind == "commit":
            return _content(repo, entry, ref, base())
        listing = repos.list_tree(repo.path, sha, path)
        return jsonify([_content(repo, e, ref, base()) for e in listing])

    @app.put("/repos/<owner>/<name>/contents/<path:path>")
    def put_contents(owner: str, name: str, path: str) -> tuple[Json, int]:
        """Create or replace one file with a commit (needs contents: write)."""
        repo = repo_for(owner, name, "contents", "write")
        data = body()
        message, content = data.get("message"), data.get("content")
        if not isinstance(message, str) or not isinstance(content, str):
            raise GitHubError(422, "Invalid request.\n\nmessage and content are required.")
        try:
            raw = base64.b64decode(content, validate=True)
        except binascii.Error:
            raise GitHubError(422, "content is not valid Base64") from None
        branch = data.get("branch") or repo.default_branch
        sha = state.commit(repo.full_name, {path: raw}, branch, message)
        entry = repos.find_entry(repo.path, sha, path)
        assert entry is not None
        return {
            "content": _content(repo, entry, branch, base()),
            "commit": _commit(repo, repos.commit_info(repo.path, sha), base()),
        }, 201

    @app.get("/repos/<owner>/<name>/branches/<path:branch>")
    def get_branch(owner: str, name: str, branch: str) -> Json:
        repo = repo_for(owner, name, "contents")
        sha = repos.resolve_ref(repo.path, f"refs/heads/{branch}")
        if sha is None:
            raise GitHubError(404, "Branch not found")
        api = f"{base()}/repos/{repo.full_name}"
        return {
            "name": branch,
            "commit": _commit(repo, repos.commit_info(repo.path, sha), base()),
            "protected": False,
            "protection": {
                "enabled": False,
                "required_status_checks": {
                    "enforcement_level": "off",
                    "contexts": [],
                    "checks": [],
                },
            },
            "protection_url": f"{api}/branches/{branch}/protection",
            "_links": {
                "self": f"{api}/branches/{branch}",
                "html": f"{base()}/{repo.full_name}/tree/{branch}",
            },
        }

    @app.get("/repos/<owner>/<name>/git/ref/<path:ref>")
    def get_git_ref(owner: str, name: str, ref: str) -> Json:
        repo = repo_for(owner, name, "contents")
        sha = repos.resolve_ref(repo.path, f"refs/{ref}")
        if sha is None:
            raise GitHubError(404, "Not Found")
        api = f"{base()}/repos/{repo.full_name}"
        return {
            "ref": f"refs/{ref}",
            "node_id": _node_id("Ref", _stable_id(f"{repo.full_name}:{ref}")),
            "url": f"{api}/git/refs/{ref}",
            "object": {"type": "commit", "sha": sha, "url": f"{api}/git/commits/{sha}"},
        }

    @app.get("/repos/<owner>/<name>/commits/<path:ref>")
    def get_commit(owner: str, name: str, ref: str) -> Json:
        repo = repo_for(owner, name, "contents")
        if repos.is_empty(repo.path):
            raise GitHubError(409, "Git Repository is empty.")
        return _commit(repo, repos.commit_info(repo.path, commit_sha(repo, ref)), base())

    @app.get("/repos/<owner>/<name>/compare/<path:basehead>")
    def compare_commits(owner: str, name: str, basehead: str) -> Json:
        """``base...head``: where head stands against base (ahead, behind, diverged or
        identical), with the commits head has that base lacks, oldest first."""
        repo = repo_for(owner, name, "contents")
        base_ref, separator, head_ref = basehead.partition("...")
        if not separator:
            raise GitHubError(404, "Not Found")
        if repos.is_empty(repo.path):
            raise GitHubError(409, "Git Repository is empty.")
        base_sha, head_sha = commit_sha(repo, base_ref), commit_sha(repo, head_ref)
        try:
            merge_base = repos.git(repo.path, "merge-base", base_sha, head_sha).decode().strip()
        except RuntimeError:
            unrelated = f"No common ancestor between {base_ref} and {head_ref}."
            raise GitHubError(404, unrelated) from None
        ahead = repos.git(repo.path, "rev-list", "--reverse", f"{base_sha}..{head_sha}")
        behind = repos.git(repo.path, "rev-list", "--count", f"{head_sha}..{base_sha}")
        ahead_shas, behind_by = ahead.decode().split(), int(behind.decode())
        status = (
            ("identical" if not behind_by else "behind")
            if not ahead_shas
            else ("ahead" if not behind_by else "diverged")
        )
        html = f"{base()}/{repo.full_name}"
        api = f"{base()}/repos/{repo.full_name}"

        def commit_json(sha: str) -> Json:
            return _commit(repo, repos.commit_info(repo.path, sha), base())

        return {
            "url": f"{api}/compare/{basehead}",
            "html_url": f"{html}/compare/{basehead}",
            "permalink_url": f"{html}/compare/{owner}:{base_sha[:7]}...{owner}:{head_sha[:7]}",
            "diff_url": f"{html}/compare/{basehead}.diff",
            "patch_url": f"{html}/compare/{basehead}.patch",
            "base_commit": commit_json(base_sha),
            "merge_base_commit": commit_json(merge_base),
            "status": status,
            "ahead_by": len(ahead_shas),
            "behind_by": behind_by,
            "total_commits": len(ahead_shas),
            "commits": [commit_json(sha) for sha in ahead_shas[:250]],
            "files": [],
        }

    @app.get("/repos/<owner>/<name>/pulls/<int:number>")
    def get_pull(owner: str, name: str, number: int) -> Json:
        repo = repo_for(owner, name, "pull_requests")
        return _pull(state, pull_request(repo, number), base())

    @app.get("/repos/<owner>/<name>/issues/<int:number>")
    def get_issue(owner: str, name: str, number: int) -> Json:
        repo = repo_for(owner, name, "pull_requests")
        return _issue(state, pull_request(repo, number), base())

    # -- deployments --

    @app.post("/repos/<owner>/<name>/deployments")
    def create_deployment(owner: str, name: str) -> tuple[Json, int]:
        repo = repo_for(owner, name, "deployments", "write")
        data = body()
        ref = data.get("ref")
        if not isinstance(ref, str) or not ref:
            raise GitHubError(422, 'Invalid request.\n\n"ref" wasn\'t supplied.')
        sha = repos.resolve_commit(repo.path, ref)
        if sha is None:
            raise GitHubError(422, f"No ref found for: {ref}")
        environment = data.get("environment") or "production"
        dep = Deployment(
            id=state.next_id(),
            repo=repo.full_name,
            sha=sha,
            ref=ref,
            task=data.get("task") or "deploy",
            environment=environment,
            description=data.get("description"),
            payload=data.get("payload", {}),
            transient_environment=bool(data.get("transient_environment", False)),
            production_environment=bool(
                data.get("production_environment", environment == "production")
            ),
            auto_merge=bool(data.get("auto_merge", True)),
            required_contexts=data.get("required_contexts"),
            created_at=_now(),
        )
        state.deployments.append(dep)
        return _deployment(state, dep, base()), 201

    @app.get("/repos/<owner>/<name>/deployments")
    def list_deployments(owner: str, name: str) -> Response:
        repo = repo_for(owner, name, "deployments")
        filters = {
            k: request.args[k] for k in ("sha", "ref", "task", "environment") if k in request.args
        }
        found = [
            d
            for d in reversed(state.deployments)
            if d.repo == repo.full_name and all(getattr(d, k) == v for k, v in filters.items())
        ]
        return paged([_deployment(state, d, base()) for d in found])

    @app.get("/repos/<owner>/<name>/deployments/<int:deployment_id>")
    def get_deployment(owner: str, name: str, deployment_id: int) -> Json:
        return _deployment(
            state, deployment(repo_for(owner, name, "deployments"), deployment_id), base()
        )

    @app.post("/repos/<owner>/<name>/deployments/<int:deployment_id>/statuses")
    def create_deployment_status(owner: str, name: str, deployment_id: int) -> tuple[Json, int]:
        dep = deployment(repo_for(owner, name, "deployments", "write"), deployment_id)
        data = body()
        if data.get("state") not in DEPLOYMENT_STATES:
            raise GitHubError(422, "Validation Failed: state is not included in the list")
        status = DeploymentStatus(
            id=state.next_id(),
            deployment_id=dep.id,
            repo=dep.repo,
            state=data["state"],
            environment=data.get("environment") or dep.environment,
            description=data.get("description") or "",
            log_url=data.get("log_url") or data.get("target_url") or "",
            environment_url=data.get("environment_url") or "",
            created_at=_now(),
        )
        if status.state == "success" and data.get("auto_inactive", True):
            deactivate_previous(dep)
        state.deployment_statuses.append(status)
        return _deployment_status(state, status, base()), 201

    def deactivate_previous(current: Deployment) -> None:
        """GitHub's auto_inactive: earlier non-transient, non-production deployments to the
        environment whose latest status is success get an inactive status."""
        for dep in state.deployments:
            same = dep.repo == current.repo and dep.environment == current.environment
            if not same or dep.id >= current.id or dep.transient_environment:
                continue
            own = [s for s in state.deployment_statuses if s.deployment_id == dep.id]
            if own and own[-1].state == "success" and not dep.production_environment:
                inactive = replace(own[-1], id=state.next_id(), state="inactive", created_at=_now())
                state.deployment_statuses.append(inactive)

    @app.get("/repos/<owner>/<name>/deployments/<int:deployment_id>/statuses")
    def list_deployment_statuses(owner: str, name: str, deployment_id: int) -> Response:
        dep = deployment(repo_for(owner, name, "deployments"), deployment_id)
        found = [s for s in reversed(state.deployment_statuses) if s.deployment_id == dep.id]
        return paged([_deployment_status(state, s, base()) for s in found])

    # -- commit statuses --

    @app.post("/repos/<owner>/<name>/statuses/<sha>")
    def create_commit_status(owner: str, name: str, sha: str) -> tuple[Json, int]:
        repo = repo_for(owner, name, "statuses", "write")
        data = body()
        resolved = repos.resolve_commit(repo.path, sha)
        if resolved is None:
            raise GitHubError(422, f"No commit found for SHA: {sha}")
        if data.get("state") not in COMMIT_STATES:
            raise GitHubError(422, "Validation Failed: state is not included in the list")
        status = CommitStatus(
            id=state.next_id(),
            repo=repo.full_name,
            sha=resolved,
            state=data["state"],
            target_url=data.get("target_url"),
            description=data.get("description"),
            context=data.get("context") or "default",
            created_at=_now(),
        )
        state.statuses.append(status)
        return _commit_status(status, base()), 201

    @app.get("/repos/<owner>/<name>/statuses/<path:ref>")
    @app.get("/repos/<owner>/<name>/commits/<path:ref>/statuses")
    def list_commit_statuses(owner: str, name: str, ref: str) -> Response:
        repo = repo_for(owner, name, "statuses")
        sha = commit_sha(repo, ref)
        found = [s for s in reversed(state.statuses) if s.repo == repo.full_name and s.sha == sha]
        return paged([_commit_status(s, base()) for s in found])

    @app.get("/repos/<owner>/<name>/commits/<path:ref>/status")
    def combined_status(owner: str, name: str, ref: str) -> Response:
        """GitHub's combined status: the newest status of each context (a page of them,
        ``per_page`` and ``page`` as GitHub's lists, ``total_count`` counting all), and
        ``state`` failure if one failed or errored, pending if one is or there are none,
        else success."""
        repo = repo_for(owner, name, "statuses")
        sha = commit_sha(repo, ref)
        newest: dict[str, CommitStatus] = {}
        for status in reversed(state.statuses):
            if (status.repo, status.sha) == (repo.full_name, sha):
                newest.setdefault(status.context, status)
        latest = list(newest.values())
        states = {status.state for status in latest}
        combined = (
            "failure"
            if states & {"error", "failure"}
            else "pending"
            if not latest or "pending" in states
            else "success"
        )
        chunk, headers = page_of(latest)
        api = f"{base()}/repos/{repo.full_name}"
        response = jsonify(
            {
                "state": combined,
                "statuses": [
                    {k: v for k, v in _commit_status(s, base()).items() if k != "creator"}
                    | {"required": False}
                    for s in chunk
                ],
                "sha": sha,
                "total_count": len(latest),
                "repository": repository_json(state, repo, base()),
                "commit_url": f"{api}/commits/{sha}",
                "url": f"{api}/commits/{sha}/status",
            }
        )
        response.headers.update(headers)
        return response

    # -- check runs --

    def check_run_fields(data: Json, run: CheckRun) -> None:
        """Apply the writable fields of a create or update body to ``run``, as GitHub
        validates them: a conclusion completes the run, ``completed`` needs one, and an
        output needs a title and a summary."""
        for key in ("name", "external_id", "details_url"):
            if key in data:
                setattr(run, key, data[key])
        status = data.get("status", run.status if "conclusion" not in data else "completed")
        if status not in CHECK_STATUSES:
            raise GitHubError(422, "Validation Failed: status is not included in the list")
        conclusion = data.get("conclusion", run.conclusion)
        if conclusion is not None and conclusion not in CHECK_CONCLUSIONS:
            raise GitHubError(422, "Validation Failed: conclusion is not included in the list")
        if status == "completed" and conclusion is None:
            raise GitHubError(422, "Validation Failed: conclusion must be given when completed")
        if conclusion is not None:
            status = "completed"
        run.status, run.conclusion = status, conclusion if status == "completed" else None
        run.completed_at = (run.completed_at or _now()) if status == "completed" else None
        if "output" in data:
            output = data["output"]
            if not isinstance(output, dict) or not output.get("title") or not output.get("summary"):
                raise GitHubError(422, "Validation Failed: output needs a title and a summary")
            for key in ("summary", "text"):
                if len(output.get(key) or "") > CHECK_OUTPUT_MAX:
                    raise GitHubError(
                        422, f"Validation Failed: output.{key} is too long (maximum is 65535)"
                    )
            run.output = {key: output.get(key) for key in ("title", "summary", "text")}
        if "actions" in data:
            run.actions = check_run_actions(data["actions"])

    def check_run_actions(actions: Any) -> list[Json]:
        """A run's action buttons as GitHub validates them."""
        if not isinstance(actions, list) or len(actions) > CHECK_ACTIONS_MAX:
            raise GitHubError(422, "Validation Failed: actions must be at most 3")
        for action in actions:
            for key, longest in CHECK_ACTION_LIMITS.items():
                value = action.get(key) if isinstance(action, dict) else None
                if not isinstance(value, str) or not value:
                    raise GitHubError(422, f"Validation Failed: actions {key} is missing")
                if len(value) > longest:
                    raise GitHubError(
                        422, f"Validation Failed: actions {key} is too long (maximum is {longest})"
                    )
        return [dict(action) for action in actions]

    def check_run_of(repo: Repository, check_run_id: int) -> CheckRun:
        found = next((r for r in state.check_runs if r.id == check_run_id), None)
        if found is None or found.repo != repo.full_name:
            raise GitHubError(404, "Not Found")
        return found

    @app.post("/repos/<owner>/<name>/check-runs")
    def create_check_run(owner: str, name: str) -> tuple[Json, int]:
        repo = repo_for(owner, name, "checks", "write")
        data = body()
        if not isinstance(data.get("name"), str) or not data["name"]:
            raise GitHubError(422, 'Invalid request.\n\n"name" wasn\'t supplied.')
        sha = data.get("head_sha")
        if not isinstance(sha, str) or repos.resolve_commit(repo.path, sha) != sha:
            raise GitHubError(422, f"No commit found for SHA: {sha}")
        suite = next(
            (
                r.check_suite_id
                for r in state.check_runs
                if (r.repo, r.head_sha) == (repo.full_name, sha)
            ),
            None,
        )
        run = CheckRun(
            id=state.next_id(),
            repo=repo.full_name,
            head_sha=sha,
            name=data["name"],
            external_id="",
            details_url=None,
            status="queued",
            conclusion=None,
            started_at=_now(),
            completed_at=None,
            output={},
            check_suite_id=suite or state.next_id(),
            app_id=state.app_id,
        )
        check_run_fields(data, run)
        state.check_runs.append(run)
        return _check_run(state, run, base()), 201

    @app.patch("/repos/<owner>/<name>/check-runs/<int:check_run_id>")
    def update_check_run(owner: str, name: str, check_run_id: int) -> Json:
        run = check_run_of(repo_for(owner, name, "checks", "write"), check_run_id)
        if run.app_id != state.app_id:
            raise GitHubError(
                403,
                f"Invalid app_id `{state.app_id}` - check run can only be modified by its creator",
            )
        updated = replace(run)  # a refused update changes nothing
        check_run_fields(body(), updated)
        state.check_runs[state.check_runs.index(run)] = updated
        return _check_run(state, updated, base())

    @app.get("/repos/<owner>/<name>/check-runs/<int:check_run_id>")
    def get_check_run(owner: str, name: str, check_run_id: int) -> Json:
        return _check_run(
            state, check_run_of(repo_for(owner, name, "checks"), check_run_id), base()
        )

    @app.get("/repos/<owner>/<name>/commits/<path:ref>/check-runs")
    def list_check_runs(owner: str, name: str, ref: str) -> Response:
        """Newest first; ``filter=latest`` (the default) keeps the newest run of each name,
        ``all`` every one; ``check_name`` and ``status`` narrow it."""
        repo = repo_for(owner, name, "checks")
        sha = commit_sha(repo, ref)
        if request.args.get("filter", "latest") not in ("latest", "all"):
            raise GitHubError(422, "Validation Failed: filter is not included in the list")
        found = [
            r for r in reversed(state.check_runs) if (r.repo, r.head_sha) == (repo.full_name, sha)
        ]
        if "check_name" in request.args:
            found = [r for r in found if r.name == request.args["check_name"]]
        if "status" in request.args:
            found = [r for r in found if r.status == request.args["status"]]
        if request.args.get("filter", "latest") == "latest":
            newest: dict[str, CheckRun] = {}
            for run in found:
                newest.setdefault(run.name, run)
            found = list(newest.values())
        chunk, headers = page_of(found)
        response = jsonify(
            {"total_count": len(found), "check_runs": [_check_run(state, r, base()) for r in chunk]}
        )
        response.headers.update(headers)
        return response

    # -- issue comments --

    @app.post("/repos/<owner>/<name>/issues/<int:number>/comments")
    def create_comment(owner: str, name: str, number: int) -> tuple[Json, int]:
        repo = repo_for(owner, name, "pull_requests", "write")
        pull_request(repo, number)
        text = body().get("body")
        if not isinstance(text, str) or not text:
            raise GitHubError(422, "Validation Failed: body cannot be blank")
        now = _now()
        comment = IssueComment(state.next_id(), repo.full_name, number, text, now, now)
        state.comments.append(comment)
        return _comment(state, comment, base()), 201

    @app.get("/repos/<owner>/<name>/issues/<int:number>/comments")
    def list_comments(owner: str, name: str, number: int) -> Response:
        repo = repo_for(owner, name, "pull_requests")
        found = [c for c in state.comments if c.repo == repo.full_name and c.issue_number == number]
        return paged([_comment(state, c, base()) for c in found])

    def comment_of(owner: str, name: str, comment_id: int, level: str = "read") -> IssueComment:
        repo = repo_for(owner, name, "pull_requests", level)
        comment = next((c for c in state.comments if c.id == comment_id), None)
        if comment is None or comment.repo != repo.full_name:
            raise GitHubError(404, "Not Found")
        return comment

    @app.get("/repos/<owner>/<name>/issues/comments/<int:comment_id>")
    def get_comment(owner: str, name: str, comment_id: int) -> Json:
        return _comment(state, comment_of(owner, name, comment_id), base())

    @app.patch("/repos/<owner>/<name>/issues/comments/<int:comment_id>")
    def edit_comment(owner: str, name: str, comment_id: int) -> Json:
        comment = comment_of(owner, name, comment_id, "write")
        text = body().get("body")
        if not isinstance(text, str) or not text:
            raise GitHubError(422, "Validation Failed: body cannot be blank")
        comment.body, comment.updated_at = text, _now()
        return _comment(state, comment, base())

    # -- collaborators and reactions --

    @app.get("/repos/<owner>/<name>/collaborators/<username>/permission")
    def collaborator_permission(owner: str, name: str, username: str) -> Json:
        """A user's permission (admin, write, read, none) and role on the repository; one
        who is no collaborator may read a public repository and nothing of a private one."""
        repo = repo_for(owner, name)
        role = state.collaborators.get((repo.full_name.lower(), username.lower()))
        if role is None:
            role = "none" if repo.private else "read"
        permission = ROLE_PERMISSIONS.get(role, "none")
        level = ("none", "read", "write", "admin").index(permission)
        user = _user(username, base()) | {
            "permissions": {
                "pull": level >= 1,
                "triage": role in ("triage", "write", "maintain", "admin"),
                "push": level >= 2,
                "maintain": role in ("maintain", "admin"),
                "admin": level >= 3,
            },
            "role_name": role,
        }
        return {"permission": permission, "role_name": role, "user": user}

    def react(repo: Repository, subject: str, comment_id: int) -> tuple[Json, int]:
        """Add the App's reaction: 201, or 200 with the one it already added."""
        content = body().get("content")
        if content not in REACTIONS:
            raise GitHubError(422, "Validation Failed: content is not included in the list")
        found = next(
            (
                r
                for r in state.reactions
                if (r.repo, r.subject, r.comment_id, r.content)
                == (repo.full_name, subject, comment_id, content)
            ),
            None,
        )
        code = 200
        if found is None:
            code = 201
            found = Reaction(state.next_id(), repo.full_name, subject, comment_id, content, _now())
            state.reactions.append(found)
        reaction = {
            "id": found.id,
            "node_id": _node_id("Reaction", found.id),
            "user": _bot(base()),
            "content": found.content,
            "created_at": _iso(found.created_at),
        }
        return reaction, code

    @app.post("/repos/<owner>/<name>/issues/comments/<int:comment_id>/reactions")
    def react_to_issue_comment(owner: str, name: str, comment_id: int) -> tuple[Json, int]:
        comment = comment_of(owner, name, comment_id, "write")
        return react(state.repository(comment.repo), "issue_comment", comment_id)

    @app.post("/repos/<owner>/<name>/comments/<int:comment_id>/reactions")
    def react_to_commit_comment(owner: str, name: str, comment_id: int) -> tuple[Json, int]:
        repo = repo_for(owner, name, "contents", "write")
        if not any(c.id == comment_id and c.repo == repo.full_name for c in state.commit_comments):
            raise GitHubError(404, "Not Found")
        return react(repo, "commit_comment", comment_id)

    # -- git smart HTTP (fetch only) --

    @app.get("/<owner>/<name>.git/info/refs")
    @app.post("/<owner>/<name>.git/git-upload-pack")
    def git_http(owner: str, name: str) -> Response:
        user, secret = _git_credentials()
        token = state.valid_token(secret) if secret and user in (None, "x-access-token") else None
        repo = state.repositories.get(f"{owner}/{name}".lower())
        if token is None:
            response = Response(
                "Invalid username or token.\n", 401, {"WWW-Authenticate": 'Basic realm="GitHub"'}
            )
        elif repo is None or not token.grants(repo):
            response = Response("Repository not found.\n", 404)
        elif not token.allows("contents", "read"):
            response = Response("Permission to read the repository denied.\n", 403)
        elif request.method == "GET" and request.args.get("service") != "git-upload-pack":
            response = Response("Only git-upload-pack is served.\n", 403)
        else:
            service_path = request.path.removeprefix(f"/{owner}/{name}.git")
            response = _http_backend(state.git_root, f"/{repo.owner}/{repo.name}.git{service_path}")
        state.git_requests.append(
            GitRequest(request.method, request.path, user, secret, response.status_code)
        )
        return response

    return app


def _git_credentials() -> tuple[str | None, str | None]:
    """(user, secret) from a Basic or Bearer/token Authorization header."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "token"):
        return None, value or None
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        return user, password or None
    return None, None


def _http_backend(project_root: Path, path_info: str) -> Response:
    """Serve one request with `git http-backend` run as a CGI program."""
    payload = request.get_data()
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        payload = gzip.decompress(payload)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "GIT_PROJECT_ROOT": str(project_root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": path_info,
        "QUERY_STRING": request.query_string.decode(),
        "REQUEST_METHOD": request.method,
        "CONTENT_TYPE": request.content_type or "",
        "CONTENT_LENGTH": str(len(payload)),
        "REMOTE_USER": "x-access-token",
        "REMOTE_ADDR": request.remote_addr or "",
    }
    if protocol := request.headers.get("Git-Protocol"):
        env["HTTP_GIT_PROTOCOL"] = protocol
    result = subprocess.run(
        ["git", "http-backend"], input=payload, capture_output=True, env=env, check=False
    )
    if result.returncode != 0:
        return Response(result.stderr, 500)
    head, _, content = result.stdout.partition(b"\r\n\r\n")
    response = Response(content, 200)
    for line in head.decode("latin-1").split("\r\n"):
        key, _, value = line.partition(":")
        if key.lower() == "status":
            response.status = value.strip()
        elif key:
            response.headers[key] = value.strip()
    return response


class GitHubServer:
    """The test server on 127.0.0.1 in a background thread; `reset()` swaps in a fresh state
    while the URL stays the same."""

    def __init__(self, state: GitHubState) -> None:
        self.state = state
        self._app = create_github_server(state)
        self._live = LiveServer(self._dispatch)
        self.url = self._live.url

    def _dispatch(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self._app(environ, start_response)

    def start(self) -> None:
        self._live.start()

    def stop(self) -> None:
        self._live.stop()

    def reset(self, state: GitHubState) -> None:
        self.state = state
        self._app = create_github_server(state)

    def repository_json(self, full_name: str) -> Json:
        """The repository as this server renders it, e.g. for a webhook payload."""
        return repository_json(self.state, self.state.repository(full_name), self.url)
