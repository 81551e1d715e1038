"""The build worker's exceptions: one root, split by what the caller should do next.

A Celery wrapper retries :class:`TransientBuildError` (with backoff, a bounded number of
times) and fails the build at once on :class:`PermanentBuildError`. Messages are shown to
people as the build's error, so they say what went wrong and never carry a secret.
"""

from __future__ import annotations


class BuildError(Exception):
    """Base class of every error the build worker raises on purpose."""


class TransientBuildError(BuildError):
    """The same step may succeed if tried again: network, registry down, 5xx, engine restart."""


class PermanentBuildError(BuildError):
    """Trying again cannot help: bad Dockerfile or compose file, missing commit, refused push."""


class BuildStopped(PermanentBuildError):
    """The control plane stopped the build (a newer commit superseded it): not a failure
    to report, the build is cancelled already."""
