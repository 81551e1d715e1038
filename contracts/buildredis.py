"""What a build worker and the control plane share through Redis, by key and by rule.

The build worker writes a build's live log and polls its stop key; the control plane
reads and persists the log and sets the key. Both sides keep to the same caps: a build's
output is the code's own, so a line is held to :data:`MAX_LINE_BYTES` (cut, with a
marker) and a build to :data:`MAX_BUILD_BYTES` (then one :data:`TRUNCATED` line).
"""

from __future__ import annotations

MAX_LINES = 100_000
MAX_LINE_BYTES = 4 * 1024
MAX_BUILD_BYTES = 5 * 1024 * 1024
LINE_CUT = " [line truncated]"
TRUNCATED = f"[log truncated: this build wrote more than {MAX_BUILD_BYTES // 2**20} MiB]"
END_MARKER = "end"
KEEP_SECONDS = 24 * 3600


def stream_key(build_id: int) -> str:
    return f"portside:build:{build_id}:log"


def size_key(build_id: int) -> str:
    """How many bytes of the build's log were written so far (the per-build cap)."""
    return f"portside:build:{build_id}:log-bytes"


def stop_key(build_id: int, attempt: int) -> str:
    """One attempt's: a later attempt of the build (taken over) is not stopped by it."""
    return f"portside:build:{build_id}:{attempt}:stop"


def cap_line(line: str) -> str:
    """``line`` cut to at most MAX_LINE_BYTES of UTF-8, the marker included."""
    encoded = line.encode()
    if len(encoded) <= MAX_LINE_BYTES:
        return line
    room = MAX_LINE_BYTES - len(LINE_CUT.encode())
    return encoded[:room].decode(errors="ignore") + LINE_CUT


def line_size(line: str) -> int:
    return len(line.encode()) + 1  # its newline


def fitting(lines: list[str], written: int) -> tuple[list[str], bool]:
    """The lines that fit under MAX_BUILD_BYTES after ``written`` bytes, and whether
    some did not (the log is then cut there)."""
    kept: list[str] = []
    for line in lines:
        written += line_size(line)
        if written > MAX_BUILD_BYTES:
            return kept, True
        kept.append(line)
    return kept, False
