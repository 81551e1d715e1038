"""``GET /metrics``: Prometheus text, from every web worker and from the database.

Behind a bearer token (``PORTSIDE_METRICS_TOKEN``, or a read or admin API token): the
numbers name hosts, environments and containers, and a scrape costs database work. That
work is done at most once per :data:`CACHE_SECONDS` in each web process, however often
or however many at once scrape it; the web process's own counters are always fresh.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric

from controlplane import metrics
from controlplane.api.requestdb import session
from controlplane.errors import NotPermitted, Unauthenticated
from controlplane.services import telemetry, tokens
from controlplane.settings import Settings

blueprint = Blueprint("metrics", __name__)

# Below a usual scrape interval: Prometheus sees fresh numbers, a scrape storm sees one query set.
CACHE_SECONDS = 10.0
SCRAPE_SCOPES = ("read", "admin")
CACHE_EXTENSION = "portside.metrics_cache"


class ComputedCache:
    """The database families of one process, computed again once they are older than
    ``ttl``; scrapes arriving together wait for one computation instead of each running it."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._expires = float("-inf")

    def get(self, compute: Callable[[], list[Metric]]) -> list[Metric]:
        with self._lock:
            if time.monotonic() >= self._expires:
                self._families = compute()
                self._expires = time.monotonic() + self._ttl
            return self._families

    def expire(self) -> None:
        """Compute afresh at the next scrape (after a change that must show at once)."""
        with self._lock:
            self._expires = float("-inf")


@blueprint.record_once
def _install_cache(state: BlueprintSetupState) -> None:
    state.app.extensions[CACHE_EXTENSION] = ComputedCache(CACHE_SECONDS)


def _authorize(settings: Settings) -> None:
    """401 without a token this endpoint accepts, 403 for an API token of another scope."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise Unauthenticated("a bearer token is required")
    expected = settings.metrics_token.reveal()
    if expected and hmac.compare_digest(presented.encode(), expected.encode()):
        return
    db = session()
    try:
        token = tokens.authenticate(db, presented)
        scope = token.scope if token is not None else None
    finally:
        db.close()
    if scope is None:
        raise Unauthenticated("the token is invalid or revoked")
    if scope not in SCRAPE_SCOPES:
        raise NotPermitted("this needs the metrics token or a token of scope admin or read")


def _database_families() -> list[Metric]:
    db = session()
    try:
        return telemetry.families(db)
    finally:
        db.close()  # hold no connection between scrapes


@blueprint.get("/metrics")
def scrape() -> Response:
    _authorize(current_app.extensions["portside.settings"])
    cache: ComputedCache = current_app.extensions[CACHE_EXTENSION]
    combined = metrics.Combined(metrics.process_metrics(), cache.get(_database_families))
    return Response(generate_latest(combined), mimetype=CONTENT_TYPE_LATEST)
