"""The dashboard at ``/``: server-rendered pages over controlplane.services, for people.

Login is an API token (read or admin scope) pasted once and remembered in a signed
session cookie; the build page follows a running build's log with server-sent events.
"""

from __future__ import annotations

from controlplane.dashboard import actions, envpage, hostspage, promote, servicepage, setup  # noqa: F401  # their routes join the blueprint
from controlplane.dashboard.views import blueprint

__all__ = ["blueprint"]
