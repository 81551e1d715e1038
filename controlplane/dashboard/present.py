"""How values read on the page: times, durations, commits. Pure functions, no Flask."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controlplane.models import utcnow


def aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def span(seconds: float) -> str:
    """``75`` → ``1m 15s``; ``3725`` → ``1h 02m``."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def duration(
    start: dt.datetime | None, end: dt.datetime | None, now: dt.datetime | None = None
) -> str:
    """How long something took, or has been going on so far; ``—`` if it has not started."""
    if start is None:
        return "—"
    finish = aware(end) if end is not None else (now or utcnow())
    return span((finish - aware(start)).total_seconds())


def ago(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = ((now or utcnow()) - aware(value)).total_seconds()
    if seconds < 5:
        return "just now"
    return f"{span(seconds)} ago"


def stamp(value: dt.datetime | None) -> str:
    """An exact UTC time for a ``title`` or ``datetime`` attribute."""
    return aware(value).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def first_line(text: str | None, limit: int = 100) -> str:
    line = (text or "").strip().split("\n", 1)[0].strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def short_sha(sha: str | None) -> str:
    return (sha or "")[:7]


def helpers() -> dict[str, Any]:
    """What every dashboard template may call."""
    return {
        "ago": ago,
        "duration": duration,
        "first_line": first_line,
        "short_sha": short_sha,
        "stamp": stamp,
    }
