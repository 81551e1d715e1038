"""``PORTSIDE_<NAME>_FILE``: any setting may be read from a file (Docker and systemd
secrets), for every process alike — the control plane, the build worker and the agent."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

PREFIX = "PORTSIDE_"
FILE_SUFFIX = "_FILE"


class SettingFileError(ValueError):
    """A ``*_FILE`` variable that cannot be used; the message names the variable."""


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
