"""Git remotes that are not GitHub: which URLs a service may track, and how git is run
against one without prompts and without a credential on its command line.

Shared by the control plane (``git ls-remote`` to poll and resolve refs) and the build
worker (``git fetch`` of one commit). A token reaches git through ``GIT_ASKPASS`` (a
script in a private temporary directory reading the child's environment), an SSH key
through a file ``0600`` in that directory for ``ssh -i``; the directory is deleted when
the command ends.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

LS_REMOTE_TIMEOUT = 30.0
# git's remote-helper syntax (``ext::sh -c …``, ``fd::3``) runs commands: never accepted.
_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
# ``[user@]host:path``, git's scp-like form of an SSH remote.
_SCP = re.compile(r"^(?:[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*):(?P<path>.+)$")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_LOOPBACK_NAMES = ("localhost",)
# Environment that would make git print what it sends or ask someone else for secrets.
UNSAFE_ENV = (
    "GIT_TRACE",
    "GIT_TRACE_CURL",
    "GIT_TRACE_PACKET",
    "GIT_CURL_VERBOSE",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_CONFIG_PARAMETERS",
)
_ASKPASS = """#!/bin/sh
case "$1" in
Username*) printf '%s\\n' "$PORTSIDE_GIT_USERNAME" ;;
*) printf '%s\\n' "$PORTSIDE_GIT_PASSWORD" ;;
esac
"""
# Which username goes with a bare token (GitHub's; GitLab and Gitea take any with a PAT).
TOKEN_USERNAME = "x-access-token"  # noqa: S105 - a username, not a password


class GitUrlRefused(ValueError):
    """A git URL Portside does not track; the message says what is accepted."""


class GitRemoteError(Exception):
    """``git ls-remote`` failed; ``transient`` when trying later may help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class GitAuth:
    """Credentials for one remote: an https token (or ``user:password``) or an SSH key."""

    token: str | None = field(default=None, repr=False)
    ssh_key: str | None = field(default=None, repr=False)

    def secrets(self) -> list[str]:
        """Every form of the credentials that could show up in output."""
        found: list[str] = []
        if self.token:
            found.append(self.token)
            found.extend(part for part in self.token.split(":", 1)[1:] if part)
        if self.ssh_key:
            found.append(self.ssh_key.strip())
            found.extend(
                line.strip()
                for line in self.ssh_key.splitlines()
                if line.strip() and "-----" not in line
            )
        return found


def check_git_url(url: str, *, allow_local: bool) -> str:
    """The kind of a git URL a service may track: ``https``, ``http`` (loopback only),
    ``ssh`` (``ssh://`` or ``user@host:path``) or ``local`` (an absolute path or
    ``file://``, only with ``allow_local``); GitUrlRefused with the reason otherwise."""
    if url.startswith("-"):
        raise GitUrlRefused("a git URL must not start with '-'")
    if _HELPER.match(url):
        raise GitUrlRefused("remote helpers such as ext:: and fd:: are not accepted")
    if not url or _CONTROL.search(url):
        raise GitUrlRefused("a git URL without spaces or control characters")
    if url.startswith("/"):
        return _local(url, allow_local)
    if "://" not in url:
        match = _SCP.match(url)
        if match is None or match.group("host").startswith("-"):
            raise GitUrlRefused(
                "an https:// or ssh:// URL, user@host:path, or an absolute local path"
            )
        return "ssh"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise GitUrlRefused("not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise GitUrlRefused("a file:// URL names a path on this machine")
        return _local(parts.path, allow_local)
    if not host:
        raise GitUrlRefused("the URL has no host")
    # git percent-decodes a URL before it hands the host and user to ssh.
    if any(unquote(name).startswith("-") for name in (host, parts.username or "")):
        raise GitUrlRefused("a host or user must not start with '-'")
    if parts.password is not None:
        raise GitUrlRefused("no password in the URL: give it as git_token")
    if scheme == "ssh":
        return "ssh"
    if parts.username is not None:
        raise GitUrlRefused("no user in an https URL: give user:password as git_token")
    if scheme == "https":
        return "https"
    if scheme == "http" and _is_loopback(host):
        return "http"
    raise GitUrlRefused(f"scheme {scheme!r} is not accepted: use https:// or ssh://")


def _local(path: str, allow_local: bool) -> str:
    if not allow_local:
        raise GitUrlRefused(
            "local paths are not allowed on this control plane (PORTSIDE_ALLOW_LOCAL_GIT=1)"
        )
    if not path.startswith("/") or ".." in path.split("/"):
        raise GitUrlRefused("a local repository is an absolute path without '..'")
    return "local"


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without what could leak or prompt, for a git child that must not ask."""
    env = {k: v for k, v in environ.items() if k not in UNSAFE_ENV}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C", GIT_SSH_VARIANT="ssh")
    return env


def config_args(url: str) -> list[str]:
    """``-c`` options for one command on ``url``: no stored credentials, no remote
    helpers that run commands, local paths only where the URL is one (checked before)."""
    local = url.startswith("/") or url.lower().startswith("file:")
    return [
        *("-c", "credential.helper="),
        *("-c", "http.extraHeader="),
        *("-c", "protocol.ext.allow=never"),
        *("-c", "protocol.fd.allow=never"),
        *("-c", f"protocol.file.allow={'always' if local else 'never'}"),
    ]


@contextlib.contextmanager
def auth_env(auth: GitAuth | None, environ: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """The environment of a git child using ``auth``; its key file and askpass script
    live in a private directory deleted on exit."""
    env = base_env(environ)
    with tempfile.TemporaryDirectory(prefix="portside-git-") as tmp:
        directory = Path(tmp)
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
        # A fresh known_hosts per command: first use of a host key is trusted (see
        # docs/security.rst); a deploy key only ever reads one repository.
        ssh += ["-o", "StrictHostKeyChecking=accept-new"]
        ssh += ["-o", f"UserKnownHostsFile={directory / 'known_hosts'}"]
        if auth is not None and auth.ssh_key:
            key = directory / "key"
            key.touch(mode=stat.S_IRUSR | stat.S_IWUSR)
            key.write_text(auth.ssh_key.strip() + "\n")
            ssh += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        if auth is not None and auth.token:
            script = directory / "askpass"
            script.write_text(_ASKPASS)
            script.chmod(stat.S_IRWXU)
            user, sep, password = auth.token.partition(":")
            env["GIT_ASKPASS"] = str(script)
            env["PORTSIDE_GIT_USERNAME"] = user if sep else TOKEN_USERNAME
            env["PORTSIDE_GIT_PASSWORD"] = password if sep else auth.token
        yield env


def scrub(text: str, auth: GitAuth | None) -> str:
    for secret in sorted(auth.secrets() if auth else [], key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True, slots=True)
class RemoteRefs:
    """What ``git ls-remote --symref`` says: the default branch and every ref's SHA."""

    head_branch: str | None
    refs: dict[str, str]

    def resolve(self, ref: str) -> str | None:
        """The commit a branch or tag name means (an annotated tag's commit), or None."""
        for name in (f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", ref):
            if name in self.refs:
                return self.refs[name]
        return None


def ls_remote(
    url: str,
    auth: GitAuth | None = None,
    *,
    timeout: float = LS_REMOTE_TIMEOUT,
    environ: Mapping[str, str] | None = None,
) -> RemoteRefs:
    """The refs of ``url`` (checked by :func:`check_git_url` before); GitRemoteError,
    with the credentials scrubbed from git's message, when it cannot be read."""
    with auth_env(auth, os.environ if environ is None else environ) as env:
        try:
            result = subprocess.run(
                ["git", *config_args(url), "ls-remote", "--symref", "--", url],
                env=env,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                cwd=tempfile.gettempdir(),
            )
        except subprocess.TimeoutExpired:
            raise GitRemoteError(f"no answer within {timeout:.0f}s", transient=True) from None
        except OSError as exc:
            raise GitRemoteError(f"cannot run git: {exc.strerror}", transient=True) from None
    if result.returncode != 0:
        lines = scrub(result.stderr, auth).strip().splitlines()
        fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
        detail = (fatal or lines or [f"git exited with {result.returncode}"])[0]
        lowered = result.stderr.lower()
        refused = any(
            marker in lowered
            for marker in (
                "authentication failed",
                "could not read username",
                "could not read password",
                "permission denied",
                "not found",
                "does not appear to be a git repository",
                "returned error: 40",
            )
        )
        raise GitRemoteError(detail, transient=not refused)
    head: str | None = None
    refs: dict[str, str] = {}
    for line in result.stdout.splitlines():
        target, _, name = line.partition("\t")
        if target.startswith("ref: ") and name == "HEAD":
            head = target[len("ref: ") :].removeprefix("refs/heads/")
        elif re.fullmatch(r"[0-9a-f]{40}", target):
            refs[name] = target
    return RemoteRefs(head, refs)
