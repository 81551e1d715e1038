"""Prometheus metrics counted in the web processes (a leaf: prometheus-client only).

Under gunicorn every worker writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` (set to a
fresh directory by ``deploy/gunicorn.conf.py`` before the workers start) and ``/metrics``
adds them up; without it the process's own registry is used. What happens in the Celery
workers is not counted here but read from PostgreSQL when ``/metrics`` is scraped (see
``controlplane.services.telemetry``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DELIVERIES = Counter(
    "portside_deliveries",
    "GitHub deliveries by event and outcome: received and duplicate are counted as they "
    "arrive; ignored, processed and failed are the recorded deliveries in that state.",
    ["event", "outcome"],
)
DESIRED_STATE_POLLS = Counter(
    "portside_desired_state_polls",
    "Agents' desired-state requests by answer: 200 (a new snapshot) or 304 (up to date).",
    ["status"],
)
LONG_POLLS_WAITING = Gauge(
    "portside_long_polls_waiting",
    "Agents' desired-state requests held open, waiting for a change (updated each second).",
    multiprocess_mode="livesum",
)


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


def count_delivery(event: str, outcome: str) -> None:
    DELIVERIES.labels(event=event[:64], outcome=outcome).inc()


def count_poll(status: int) -> None:
    DESIRED_STATE_POLLS.labels(status=str(status)).inc()


def multiprocess(environ: Mapping[str, str] = os.environ) -> bool:
    return bool(environ.get(MULTIPROC_ENV))


def process_metrics(environ: Mapping[str, str] = os.environ) -> Collector:
    """This process's metrics, or all gunicorn workers' when running multiprocess."""
    if multiprocess(environ):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


class Combined:
    """Process metrics plus families computed at scrape time; a family of both (same
    name) gets the computed samples added, so each name appears once."""

    def __init__(self, process: Collector, computed: Iterable[Metric]) -> None:
        self._process = process
        self._computed = computed

    def collect(self) -> Iterator[Metric]:
        extra = {family.name: family for family in self._computed}
        for family in self._process.collect():
            more = extra.pop(family.name, None)
            if more is not None:
                family.samples.extend(more.samples)
            yield family
        yield from extra.values()
