"""Fetch exactly one commit into a per-build workspace, shallow, with an installation token.

The token travels only in an ``http.extraHeader`` given with ``-c`` to the one ``git fetch``
that needs it: never in the URL, so it is not stored in ``.git/config`` or ``FETCH_HEAD``,
and never in a message, since git's stderr is scrubbed before it is logged or raised.
A service tracking any git URL is fetched with its own credentials instead (``auth``:
``GIT_ASKPASS`` or ``ssh -i``, see :mod:`contracts.gitremote`), local paths included.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from buildworker.errors import PermanentBuildError, TransientBuildError
from contracts.gitremote import (
    UNSAFE_ENV,
    GitAuth,
    GitUrlRefused,
    auth_env,
    check_git_url,
    config_args,
)

FETCH_TIMEOUT = 600.0
LOCAL_TIMEOUT = 120.0
_SHA = re.compile(r"[0-9a-f]{40}")

# Matched against git's stderr under LC_ALL=C; first match wins.
_AUTH_FAILURES = (
    "returned error: 401",
    "returned error: 403",
    "authentication failed",
    "could not read username",
    "could not read password",
    "invalid username or token",
)
_MISSING_COMMIT = (
    "not our ref",
    "couldn't find remote ref",
    "no such remote ref",
    "unadvertised object",
    "returned error: 404",
    "repository not found",
    "is not a commit",
)


class AuthenticationFailed(TransientBuildError):
    """The git server refused the token (401/403): get a fresh token and try once more."""


class GitCommandError(TransientBuildError):
    """A local git command failed (disk full, broken workspace); worth another try."""


def fetch_commit(
    clone_url: str,
    sha: str,
    token: str | None,
    workspace: Path,
    *,
    log: Callable[[str], None] | None = None,
    timeout: float = FETCH_TIMEOUT,
    remote: GitAuth | None = None,
) -> Path:
    """Check out commit ``sha`` of ``clone_url`` in ``workspace`` and return its path.

    Idempotent: a redelivered task may fetch into the same workspace again, so leftovers of
    an earlier attempt are cleaned out. ``token=None`` fetches without credentials; a
    ``remote`` (a git-URL service's credentials, maybe empty) takes any URL the control
    plane accepts and fetches with those instead.
    """
    sha = sha.strip().lower()
    if not _SHA.fullmatch(sha):
        raise PermanentBuildError(f"not a full commit SHA: {sha[:64]!r}")
    if remote is None:
        _check_url(clone_url)
    else:
        _check_remote(clone_url)
    emit = log or (lambda _line: None)
    secrets = _secrets(token) + (remote.secrets() if remote else [])
    workspace.mkdir(parents=True, exist_ok=True)

    _git(["init", "--quiet", str(workspace)], cwd=workspace, secrets=secrets)
    auth = ["-c", f"http.extraHeader={_auth_header(token)}"] if token else []
    emit(f"Fetching {sha} from {clone_url}")
    # "-c http.extraHeader=" first empties any header list from the worker's own config;
    # "credential.helper=" keeps a helper from storing or offering credentials.
    fetch = [
        *(config_args(clone_url) if remote else ("-c", "http.extraHeader=")),
        *("-c", "credential.helper="),
        *auth,
        *("fetch", "--depth", "1", "--no-tags", "--quiet", "--", clone_url, sha),
    ]
    if remote is None:
        result = _run(fetch, cwd=workspace, timeout=timeout, secrets=secrets)
    else:
        with auth_env(remote, _env()) as env:
            result = _run(fetch, cwd=workspace, timeout=timeout, secrets=secrets, env=env)
    for line in _scrub(result.stderr, secrets).splitlines():
        emit(line)
    if result.returncode != 0:
        raise _fetch_error(_scrub(result.stderr, secrets), sha)

    _git(
        [
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--force",
            "--detach",
            "FETCH_HEAD",
        ],
        cwd=workspace,
        secrets=secrets,
    )
    _git(["clean", "-ffdxq"], cwd=workspace, secrets=secrets)
    head = _git(["rev-parse", "HEAD"], cwd=workspace, secrets=secrets).strip()
    if head != sha:
        raise PermanentBuildError(f"fetched {head} where commit {sha} was asked for")
    emit(f"Checked out {sha}")
    return workspace


def _check_url(clone_url: str) -> None:
    """Only http(s), and no credentials in the URL (they would be stored and logged)."""
    try:
        parts = urlsplit(clone_url)
    except ValueError:
        raise PermanentBuildError("clone URL is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentBuildError(f"clone URL must be http(s), got scheme {parts.scheme!r}")
    if parts.username is not None or parts.password is not None:
        raise PermanentBuildError("clone URL must not carry credentials")


def _check_remote(clone_url: str) -> None:
    """A git-URL service's remote, as the control plane accepted it (local paths too:
    the control plane allows them only where its admin said so)."""
    try:
        check_git_url(clone_url, allow_local=True)
    except GitUrlRefused as exc:
        raise PermanentBuildError(f"clone URL refused: {exc}") from None


def _auth_header(token: str) -> str:
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return f"Authorization: Basic {basic}"


def _secrets(token: str | None) -> list[str]:
    """Every form of the token that could show up in output."""
    if not token:
        return []
    header = _auth_header(token)
    return [header, header.split()[-1], token]


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSAFE_ENV}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C")
    return env


def _run(
    args: list[str],
    *,
    cwd: Path,
    timeout: float,
    secrets: Sequence[str],
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=_env() if env is None else env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise TransientBuildError(f"git {_verb(args)} timed out after {timeout:.0f}s") from None
    except OSError as exc:
        raise TransientBuildError(f"cannot run git: {_scrub(str(exc), secrets)}") from None


def _git(args: list[str], *, cwd: Path, secrets: Sequence[str]) -> str:
    result = _run(args, cwd=cwd, timeout=LOCAL_TIMEOUT, secrets=secrets)
    if result.returncode != 0:
        message = _scrub(result.stderr, secrets).strip()
        raise GitCommandError(f"git {_verb(args)} failed: {message}")
    return result.stdout


def _verb(args: list[str]) -> str:
    """The git subcommand, skipping ``-c key=value`` pairs (which may hold the token)."""
    rest = iter(args)
    for arg in rest:
        if arg == "-c":
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return "command"


def _fetch_error(stderr: str, sha: str) -> TransientBuildError | PermanentBuildError:
    text = stderr.strip()
    lowered = text.lower()
    detail = text.splitlines()[-1] if text else "no output"
    if any(marker in lowered for marker in _AUTH_FAILURES):
        return AuthenticationFailed(f"git server refused the token: {detail}")
    if any(marker in lowered for marker in _MISSING_COMMIT):
        return PermanentBuildError(f"commit {sha} not found in the repository: {detail}")
    return TransientBuildError(f"git fetch failed: {detail}")
