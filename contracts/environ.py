"""Reading ``PORTSIDE_*`` settings alike in every process — the control plane, the build
worker and the agent: ``PORTSIDE_<NAME>_FILE`` (Docker and systemd secrets) and the value
rules the control plane and the build worker share (so neither imports the other)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

PREFIX = "PORTSIDE_"
FILE_SUFFIX = "_FILE"
# Which builds a build worker takes: trusted only, a fork's (untrusted) only, or both.
UntrustedMode = Literal["no", "only", "yes"]
UNTRUSTED_MODES: tuple[UntrustedMode, ...] = ("no", "only", "yes")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_REGISTRY = "127.0.0.1:5000"
DEFAULT_BUILD_TIMEOUT = 3600


class SettingError(ValueError):
    """A setting that cannot be used; the message names the variable."""


class SettingFileError(SettingError):
    """A ``*_FILE`` variable that cannot be used; the message names the variable."""


class Secret(str):
    """A string that never shows itself in a repr or a log line."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('********')" if self else "Secret('')"

    def reveal(self) -> str:
        return str.__str__(self)


def mask_url(url: str) -> str:
    """Hide the password of a connection URL so it can be logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:********@{netloc}"))


def default_data_dir() -> Path:
    """``.portside`` of the source checkout Portside runs from, so two checkouts never share
    their data; ``$XDG_DATA_HOME/portside`` for an installed copy."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / ".git").exists() and (checkout / "setup.cfg").is_file():
        return checkout / ".portside"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "portside"


def require_int(name: str, raw: str, minimum: int, maximum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def require_url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in schemes or (parts.scheme not in ("sqlite",) and not parts.netloc):
        raise SettingError(f"{name} must be a {' or '.join(schemes)} URL, got {mask_url(raw)!r}")
    return raw


def registry_setting(raw: str) -> str:
    """PORTSIDE_REGISTRY: a registry's host[:port][/prefix], never a URL."""
    if "://" in raw or not raw.strip("/"):
        raise SettingError(
            f"PORTSIDE_REGISTRY must be a registry host[:port][/prefix], got {raw!r}"
        )
    return raw.rstrip("/")


def untrusted_mode(raw: str) -> UntrustedMode:
    """PORTSIDE_BUILD_UNTRUSTED: which builds a build worker takes (no, only or yes)."""
    mode = raw.strip().lower()
    if mode not in UNTRUSTED_MODES:
        raise SettingError(f"PORTSIDE_BUILD_UNTRUSTED must be no, only or yes, got {raw!r}")
    return mode


def setting_reader(environ: Mapping[str, str]) -> Callable[[str], str | None]:
    """``get("URL")``: PORTSIDE_URL (or its file) stripped, None when unset or blank."""
    files = FileAwareEnviron(environ)

    def get(name: str) -> str | None:
        value = files.get(f"{PREFIX}{name}")
        return value.strip() if value is not None and value.strip() else None

    return get


def read_setting_file(variable: str, path: str) -> str:
    """The text of the file ``variable`` names, or a one-line error naming it."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SettingFileError(f"{variable} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingFileError(f"{variable} is not a UTF-8 text file") from None


class FileAwareEnviron(Mapping[str, str]):
    """The environment, where ``PORTSIDE_X`` reads the file ``PORTSIDE_X_FILE`` names.

    Files are read when a setting is looked up, so a process never trips over the secret
    file of a setting it does not use. Setting both the value and its file is an error: the
    operator meant one of them and Portside cannot tell which.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def __getitem__(self, key: str) -> str:
        if key.startswith(PREFIX) and not key.endswith(FILE_SUFFIX):
            path = self._environ.get(key + FILE_SUFFIX, "").strip()
            if path:
                if self._environ.get(key, "").strip():
                    raise SettingFileError(f"set only one of {key} and {key}{FILE_SUFFIX}")
                return read_setting_file(key + FILE_SUFFIX, path)
        return self._environ[key]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return key in self._environ or (
            key.startswith(PREFIX) and bool(self._environ.get(key + FILE_SUFFIX, "").strip())
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)
