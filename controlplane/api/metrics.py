"""``GET /metrics``: Prometheus text, from every web worker and from the database."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controlplane import metrics
from controlplane.db import session
from controlplane.services import telemetry

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
def scrape() -> Response:
    db = session()
    try:
        computed = telemetry.families(db)
    finally:
        db.close()  # hold no connection between scrapes
    combined = metrics.Combined(metrics.process_metrics(), computed)
    return Response(generate_latest(combined), mimetype=CONTENT_TYPE_LATEST)  # type: ignore[arg-type]
