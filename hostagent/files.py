"""The agent's own files: private (0700 directories, 0600 files), written atomically, and
never reached through a symlink the agent did not make.

Everything below the state directory is handled through directory file descriptors with
``O_NOFOLLOW``, so a symlink planted in place of a directory or a file (by anyone who is
not the agent's user) makes the operation fail instead of writing or reading elsewhere.
The state directory itself is the operator's choice and may be a symlink they made.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from hostagent.errors import PermanentAgentError

DIR_MODE = 0o700
FILE_MODE = 0o600
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class UnsafePath(PermanentAgentError):
    """A path the agent would write or read is a symlink, not a directory, or not ours."""


def _checked(fd: int, where: str, *, directory: bool) -> int:
    """``fd`` after checking it is ours and of the right type; closed and refused otherwise."""
    info = os.fstat(fd)
    wanted = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    if not wanted or info.st_uid != os.geteuid():
        os.close(fd)
        kind = "directory" if directory else "regular file"
        raise UnsafePath(f"{where} is not a {kind} owned by the agent's user")
    if directory and stat.S_IMODE(info.st_mode) != DIR_MODE:
        os.fchmod(fd, DIR_MODE)
    return fd


def private_dir(path: Path) -> None:
    """Create ``path`` if needed and make it 0700; refuse one owned by another user."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.close(_checked(os.open(path, _DIR_FLAGS), str(path), directory=True))


@contextlib.contextmanager
def open_dir(root: Path, *parts: str, create: bool = True) -> Iterator[int]:
    """A descriptor of ``root/parts...``, each part 0700, none of them a symlink.

    ``root`` is made private first. With ``create`` False a missing part raises
    FileNotFoundError.
    """
    if create:
        private_dir(root)
    fd = _checked(os.open(root, _DIR_FLAGS), str(root), directory=True)
    where = root
    try:
        for part in parts:
            if not part or part in (".", "..") or "/" in part:
                raise UnsafePath(f"{part!r} is not a plain directory name")
            where = where / part
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
            try:
                child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                raise UnsafePath(f"{where} cannot be opened safely: {exc.strerror}") from None
            os.close(fd)
            fd = -1
            fd = _checked(child, str(where), directory=True)
        yield fd
    finally:
        if fd >= 0:
            os.close(fd)


def make_dirs(root: Path, *parts: str) -> Path:
    """``root/parts...`` created as :func:`open_dir` does; its path, for a child process."""
    with open_dir(root, *parts):
        return root.joinpath(*parts)


def write_file(dir_fd: int, name: str, text: str) -> None:
    """Replace ``name`` in ``dir_fd`` atomically with ``text``, mode 0600."""
    temporary = f".{name}-{secrets.token_hex(8)}"
    fd = os.open(
        temporary,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        FILE_MODE,
        dir_fd=dir_fd,
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=dir_fd)
        raise


def read_file(dir_fd: int, name: str) -> str | None:
    """The text of ``name`` in ``dir_fd``, None if absent; a symlink or foreign file refused."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafePath(f"{name} cannot be opened safely: {exc.strerror}") from None
    with os.fdopen(_checked(fd, name, directory=False), encoding="utf-8") as handle:
        return handle.read()


def remove_file(dir_fd: int, name: str) -> None:
    """Unlink ``name`` (a symlink is unlinked itself, never followed); absent is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def sealed_fd(text: str, name: str) -> int:
    """An anonymous, sealed in-memory file holding ``text``: nobody can change it any more.

    Compose reads it as ``/dev/fd/N``, so what runs is exactly what the agent checked,
    whatever happens to the copies on disk.
    """
    fd = os.memfd_create(name, os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    try:
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL,
        )
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
