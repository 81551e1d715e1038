"""What the containers the agent runs use: sampled from Docker, served to Prometheus.

A :class:`Sampler` reads every labelled container of this host (inspect, and Docker's
one-shot stats when it runs) on threads and with a Docker client of its own, so a slow
engine holds up neither reconciliation nor a scrape for long: a caller waits at most its
``wait``, then gets the last complete sample, and the read still under way lands for the
next caller. Samples younger than ``max_age`` are reused, so frequent scrapes (or several
Prometheus servers) cost Docker nothing more.

The endpoint (``PORTSIDE_AGENT_METRICS_ADDR``) serves its own registry: the containers'
usage labelled by environment, service, kind, host and container, and the image pruner's
counts.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import requests
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from contracts.agentwire import DesiredState, EnvironmentUsage
from hostagent import labels as lbl

log = logging.getLogger(__name__)

MAX_AGE = 5.0  # a sample younger than this is served again without asking Docker
# The most a scrape waits for a fresh sample (well below Prometheus's scrape timeout).
SCRAPE_WAIT = 1.0
STALE_AFTER = 120.0  # an older sample is not shown at all (the engine stopped answering)
READERS = 4  # containers read at once
# Seconds the sampler's own Docker client waits for an answer: a stuck read ends.
DOCKER_TIMEOUT = 10
LABELS = ("environment", "service", "kind", "host", "container")
HEALTH_NONE = "none"


@dataclass(frozen=True)
class Usage:
    """One container's resource use, from one Docker stats reading."""

    cpu_seconds: float
    memory_working_set: int
    memory_limit: int
    receive_bytes: int
    transmit_bytes: int


@dataclass(frozen=True)
class Reading:
    """One labelled container as sampled; ``usage`` None when it is not running."""

    id: str
    name: str
    environment: str
    service: str
    kind: str
    host: str
    running: bool
    health: str
    restarts: int
    usage: Usage | None
    # CPU used since the previous sample of the same container, in cores.
    cpu_cores: float | None = None

    @property
    def label_values(self) -> list[str]:
        return [self.environment, self.service, self.kind, self.host, self.name]


@dataclass(frozen=True)
class Sample:
    """Every labelled container of ``host`` at one moment (monotonic ``taken``)."""

    host: str
    taken: float
    readings: tuple[Reading, ...]


def usage_from_stats(stats: Mapping[str, Any]) -> Usage:
    """Usage from ``GET /containers/{id}/stats`` (pure).

    The working set is what ``docker stats`` shows and the kernel cannot simply drop:
    usage minus the inactive page cache (``total_inactive_file`` under cgroup v1,
    ``inactive_file`` under v2). The limit is the host's memory when none is set.
    """
    cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0
    memory = stats.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0
    used = int(memory.get("usage") or 0)
    networks = (stats.get("networks") or {}).values()
    return Usage(
        cpu_seconds=int(cpu) / 1e9,
        memory_working_set=max(0, used - int(inactive)),
        memory_limit=int(memory.get("limit") or 0),
        receive_bytes=sum(int(n.get("rx_bytes") or 0) for n in networks),
        transmit_bytes=sum(int(n.get("tx_bytes") or 0) for n in networks),
    )


@dataclass
class Sampler:
    """Samples this host's labelled containers off the caller's thread (see the module).

    ``track`` tells it the host and each environment's service from the desired state;
    until then it knows no host and samples nothing.
    """

    client: Any
    max_age: float = MAX_AGE
    readers: int = READERS
    clock: Callable[[], float] = time.monotonic
    host: str | None = None
    services: Mapping[str, str] = field(default_factory=dict)
    _latest: Sample | None = field(default=None, init=False)
    _running: Future[Sample] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False)
    _refresher: ThreadPoolExecutor | None = field(default=None, init=False)

    def track(self, desired: DesiredState) -> None:
        """Sample ``desired.host`` and label containers with their environment's service."""
        with self._lock:
            self.host = desired.host
            self.services = {env.name: env.service for env in desired.environments}

    def sample(self, wait: float) -> Sample | None:
        """The newest sample, after waiting up to ``wait`` s for a fresh one if it is old.

        None until one was taken (or when the last is older than ``STALE_AFTER``).
        """
        with self._lock:
            if self.host is None:
                return None
            latest = self._latest
            fresh = (
                latest is not None
                and latest.host == self.host
                and self.clock() - latest.taken < self.max_age
            )
            running = self._running
            if not fresh and running is None:
                if self._refresher is None:
                    self._refresher = ThreadPoolExecutor(1, thread_name_prefix="portside-sample")
                # _take clears _running under this lock: only after it is set here.
                running = self._running = self._refresher.submit(
                    self._take, self.host, dict(self.services)
                )
        if not fresh and running is not None and wait > 0:
            try:
                running.result(timeout=wait)
            except FutureTimeout:
                log.warning("container stats: Docker did not answer within %g s", wait)
            except Exception as exc:
                log.warning("container stats: %s", exc)
        with self._lock:
            latest = self._latest
            host = self.host
        if latest is None or latest.host != host or self.clock() - latest.taken > STALE_AFTER:
            return None
        return latest

    def close(self) -> None:
        """Stop the sampling threads (a read under way is left to finish on its own)."""
        for pool in (self._refresher, self._pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _take(self, host: str, services: Mapping[str, str]) -> Sample:
        """List and read the containers (on the refresher's thread); the latest sample."""
        try:
            filters = {"label": [lbl.ENVIRONMENT, f"{lbl.HOST}={host}"]}
            ids = [str(c["Id"]) for c in self.client.api.containers(all=True, filters=filters)]
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.readers, thread_name_prefix="portside-stats")
            found = list(self._pool.map(lambda cid: self._read(cid, services), ids))
            taken = self.clock()  # fresh from when it is complete: reads may take a while
            with self._lock:
                last = self._latest
            previous = {r.id: r for r in last.readings} if last is not None else {}
            since = taken - last.taken if last is not None else 0.0
            readings = tuple(_with_rate(r, previous.get(r.id), since) for r in found if r)
            sample = Sample(host, taken, readings)
            with self._lock:
                self._latest = sample
            return sample
        finally:
            with self._lock:
                self._running = None

    def _read(self, container_id: str, services: Mapping[str, str]) -> Reading | None:
        try:
            attrs = self.client.api.inspect_container(container_id)
        except Exception as exc:  # gone since the listing, or the engine failed: left out
            log.debug("container %s not sampled: %s", container_id[:12], exc)
            return None
        state = attrs.get("State") or {}
        running = state.get("Status") == "running"
        stats: Mapping[str, Any] | None = None
        if running:
            try:
                stats = self.client.api.stats(container_id, stream=False, one_shot=True)
            except (docker.errors.APIError, requests.RequestException) as exc:
                # An empty answer for a container started a moment ago: it shows without
                # usage now, and the next sample reads it again.
                log.debug("container %s has no stats yet: %s", container_id[:12], exc)
        labels: Mapping[str, str] = (attrs.get("Config") or {}).get("Labels") or {}
        environment = labels.get(lbl.ENVIRONMENT, "")
        return Reading(
            id=container_id,
            name=str(attrs.get("Name", "")).lstrip("/"),
            environment=environment,
            service=labels.get(lbl.COMPOSE_SERVICE) or services.get(environment) or environment,
            kind=labels.get(lbl.KIND, ""),
            host=labels.get(lbl.HOST, ""),
            running=running,
            health=(state.get("Health") or {}).get("Status") or HEALTH_NONE,
            restarts=int(attrs.get("RestartCount") or 0),
            usage=usage_from_stats(stats) if stats else None,
        )


def _with_rate(reading: Reading, previous: Reading | None, seconds: float) -> Reading:
    if reading.usage is None or previous is None or previous.usage is None or seconds <= 0:
        return reading
    used = reading.usage.cpu_seconds - previous.usage.cpu_seconds
    return dataclasses.replace(reading, cpu_cores=max(0.0, used / seconds))


def environment_usage(readings: Iterable[Reading], environment: str) -> EnvironmentUsage:
    """What the agent reports of one environment: its running containers' memory working
    set and CPU (cores, over the last sampling interval; None after one sample) summed,
    and their restarts."""
    mine = [r for r in readings if r.environment == environment]
    running = [r.usage for r in mine if r.usage is not None]
    rates = [r.cpu_cores for r in mine if r.cpu_cores is not None]
    return EnvironmentUsage(
        memory_bytes=sum(u.memory_working_set for u in running),
        cpu_cores=round(sum(rates), 4) if rates else None,
        restarts=sum(r.restarts for r in mine),
    )


@dataclass(eq=False)  # a registry keys its collectors by identity
class ContainerCollector(Collector):
    """Renders a fresh sample for each scrape; ``pruned`` gives the pruner's counts."""

    sampler: Sampler
    pruned: Callable[[], tuple[int, int]] | None = None
    wait: float = SCRAPE_WAIT

    def collect(self) -> Iterator[Metric]:
        sample = self.sampler.sample(self.wait)
        readings = sample.readings if sample is not None else ()
        families = _families()
        for reading in readings:
            values = reading.label_values
            families["up"].add_metric(values, 1.0 if reading.running else 0.0)
            families["health"].add_metric([*values, reading.health], 1.0)
            families["restarts"].add_metric(values, float(reading.restarts))
            usage = reading.usage
            if usage is None:
                continue
            families["cpu"].add_metric(values, usage.cpu_seconds)
            families["memory"].add_metric(values, float(usage.memory_working_set))
            families["limit"].add_metric(values, float(usage.memory_limit))
            families["receive"].add_metric(values, float(usage.receive_bytes))
            families["transmit"].add_metric(values, float(usage.transmit_bytes))
        yield from families.values()
        if sample is not None:
            yield GaugeMetricFamily(
                "portside_agent_sample_age_seconds",
                "How old the container sample served is (Docker answering slowly: it grows).",
                value=max(0.0, self.sampler.clock() - sample.taken),
            )
        if self.pruned is not None:
            removed, failed = self.pruned()
            yield CounterMetricFamily(
                "portside_agent_images_pruned",
                "Images the agent removed because no environment needs them any more.",
                value=removed,
            )
            yield CounterMetricFamily(
                "portside_agent_image_prune_failures",
                "Images the agent tried to remove and Docker refused (tried again later).",
                value=failed,
            )


def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    def gauge(name: str, doc: str, *extra: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=[*LABELS, *extra])

    def counter(name: str, doc: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=list(LABELS))

    return {
        "up": gauge("portside_container_up", "1 when the container is running, else 0."),
        "health": gauge(
            "portside_container_health_status",
            "1 for the container's Docker health (healthy, unhealthy, starting, none).",
            "health",
        ),
        "restarts": counter("portside_container_restarts", "Times Docker restarted the container."),
        "cpu": counter("portside_container_cpu_seconds", "CPU time the container used."),
        "memory": gauge(
            "portside_container_memory_working_set_bytes",
            "Memory the container uses, page cache it could drop left out.",
        ),
        "limit": gauge(
            "portside_container_memory_limit_bytes",
            "The container's memory limit (the host's memory when it has none).",
        ),
        "receive": counter(
            "portside_container_network_receive_bytes", "Bytes the container received."
        ),
        "transmit": counter(
            "portside_container_network_transmit_bytes", "Bytes the container sent."
        ),
    }


@dataclass
class MetricsServer:
    """The agent's Prometheus endpoint, running on a daemon thread until ``close``."""

    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(address: tuple[str, int], collector: ContainerCollector) -> MetricsServer:
    """Serve ``collector`` (and nothing of the process-wide registry) at ``address``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    host, port = address
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
