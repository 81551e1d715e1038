"""The agent loop: fetch desired → observe → plan → apply → report, forever.

``run_once`` is one level-triggered pass (a 304 still reconciles, so drift by hand is
repaired); ``run_forever`` only paces it and never lets an exception end the process.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType

from contracts.agentwire import AgentReport, DesiredState
from hostagent.apply import Applier, EnvironmentOutcome, describe
from hostagent.client import (
    AGENT_VERSION,
    PERMANENT_BACKOFF,
    ControlPlaneClient,
    DesiredStateSource,
    backoff_delay,
)
from hostagent.composerun import detect_compose_command
from hostagent.confighash import config_hash
from hostagent.errors import AgentConfigError, AgentError, PermanentAgentError
from hostagent.logship import LogShipper
from hostagent.metrics import (
    DOCKER_TIMEOUT,
    ContainerCollector,
    MetricsServer,
    Sampler,
    serve,
)
from hostagent.observe import observe
from hostagent.plan import failure_key, plan
from hostagent.prune import Pruner
from hostagent.settings import AgentSettings
from hostagent.snapshot import PreviewLimits, limit_previews
from hostagent.statusreport import Failure, build_report

log = logging.getLogger("hostagent")

MAX_LONG_POLL = 60


@dataclass
class AgentState:
    """What survives from one tick to the next (in memory only)."""

    applier: Applier
    publish_host: str = ""
    preview_limits: PreviewLimits = field(default_factory=PreviewLimits)
    failures: dict[str, Failure] = field(default_factory=dict)
    consecutive_errors: int = 0
    # Usage of the containers, added to each report; images pruned after applying.
    sampler: Sampler | None = None
    pruner: Pruner | None = None


@dataclass(frozen=True)
class TickResult:
    """What one pass did: the report it built (None if nothing is known yet)."""

    report: AgentReport | None
    desired: DesiredState | None
    fetched: bool
    changed: bool
    error: AgentError | None
    outcomes: Mapping[str, EnvironmentOutcome]


# ---------------------------------------------------------------------------------------
# One pass
# ---------------------------------------------------------------------------------------


def _remember_failures(
    state: AgentState, desired: DesiredState, outcomes: Mapping[str, EnvironmentOutcome]
) -> None:
    for outcome in outcomes.values():
        if outcome.failure_key and outcome.error:
            state.failures[outcome.failure_key] = Failure(
                outcome.name,
                outcome.deployment_id,
                outcome.error,
                outcome.logs,
                refused=outcome.state == "refused",
            )
    # Forget failures of configs no longer desired: memory stays bounded, and a state
    # that brings the config back later deserves a fresh try.
    wanted = {
        failure_key(
            env,
            config_hash(
                env, state.publish_host, desired.routing, proxy_network=state.applier.proxy_network
            ),
        )
        for env in desired.environments
    }
    for key in list(state.failures):
        if key not in wanted:
            del state.failures[key]


def run_once(
    state: AgentState, source: DesiredStateSource, *, wait: float | None = 0
) -> TickResult:
    """Fetch (unless ``wait`` is None), observe, plan, apply, observe again, report.

    A failed fetch does not stop the pass: the last good state is reconciled anyway.
    Previews get this host's default limits wherever theirs are looser or missing.
    Docker errors while observing propagate (the loop catches them).
    """
    error: AgentError | None = None
    changed = fetched = False
    desired = source.last_good
    if wait is not None:
        try:
            result = source.fetch(wait)
            desired, changed, fetched = result.state, result.changed, True
            state.consecutive_errors = 0
        except AgentError as exc:
            error = exc
            state.consecutive_errors += 1
            log.warning("desired state: %s (working on the last good state)", exc)
    if desired is not None:
        desired = limit_previews(desired, state.preview_limits)
        if state.sampler is not None:
            state.sampler.track(desired)
    host = desired.host if desired is not None else None
    client = state.applier.client
    observed = observe(client, host)
    actions = plan(
        desired,
        observed,
        publish_host=state.publish_host,
        proxy_network=state.applier.proxy_network,
        failed=set(state.failures),
    )
    outcomes: dict[str, EnvironmentOutcome] = {}
    if actions:
        log.info("applying: %s", "; ".join(describe(actions)))
        outcomes = state.applier.apply(actions)
        observed = observe(client, host)
    report: AgentReport | None = None
    if desired is not None:
        _remember_failures(state, desired, outcomes)
        report = build_report(
            desired,
            observed,
            outcomes,
            state.failures,
            state.publish_host,
            proxy_network=state.applier.proxy_network,
            # Never waits: the last sample.
            sample=state.sampler.sample(0) if state.sampler is not None else None,
        )
        if not isinstance(error, PermanentAgentError):
            try:
                source.report(report)
            except AgentError as exc:
                log.warning("status report not sent: %s", exc)
        if state.pruner is not None and state.pruner.due(applied=bool(outcomes)):
            try:
                state.pruner.run(desired)
            except Exception as exc:  # a disk left full for now must not stop reconciling
                log.warning("image pruning failed: %s", exc, exc_info=True)
    return TickResult(report, desired, fetched, changed, error, outcomes)


# ---------------------------------------------------------------------------------------
# Pacing
# ---------------------------------------------------------------------------------------


def fetch_delay(error: AgentError, consecutive_errors: int) -> float:
    """How long to leave the control plane alone after ``error``."""
    if isinstance(error, PermanentAgentError):
        return error.retry_after or PERMANENT_BACKOFF
    delay = backoff_delay(max(0, consecutive_errors - 1))
    return max(delay, error.retry_after or 0.0)


def tick_delay(
    interval: float,
    elapsed: float,
    *,
    changed: bool,
    rand: Callable[[], float] = random.random,
) -> float:
    """Sleep before the next pass: at once after a change, else the rest of the interval.

    A long poll already waited most of the interval; the jitter (up to 10 %) keeps a
    fleet of agents from ticking in step.
    """
    jitter = rand() * interval * 0.1
    if changed:
        return min(jitter, 0.5)
    return max(0.0, interval - elapsed) + jitter


def run_forever(
    settings: AgentSettings,
    state: AgentState,
    source: DesiredStateSource,
    stop: threading.Event,
) -> None:
    """Tick until ``stop`` is set; a failing tick is logged, never fatal."""
    long_poll = max(0, min(int(settings.interval), MAX_LONG_POLL))
    wait: float = 0  # the first fetch answers at once
    next_fetch = 0.0
    while not stop.is_set():
        started = time.monotonic()
        should_fetch = started >= next_fetch
        changed = False
        try:
            result = run_once(state, source, wait=wait if should_fetch else None)
            changed = result.changed
            if result.error is not None:
                next_fetch = time.monotonic() + fetch_delay(result.error, state.consecutive_errors)
                wait = 0
            elif result.fetched:
                wait = long_poll
        except Exception:
            log.exception("tick failed; trying again at the next one")
        elapsed = time.monotonic() - started
        stop.wait(tick_delay(settings.interval, elapsed, changed=changed))


def main(environ: Mapping[str, str]) -> int:
    """``portside agent``: 0 on a clean stop, 2 on bad configuration, 1 without Docker."""
    try:
        settings = AgentSettings.from_env(environ)
    except AgentConfigError as exc:
        print(f"portside agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=str(environ.get("PORTSIDE_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import docker

    try:
        client = docker.DockerClient.from_env(environment=dict(environ))
        client.ping()
    except Exception as exc:
        print(f"portside agent: cannot reach the Docker engine: {exc}", file=sys.stderr)
        return 1
    applier = Applier(
        client,
        settings.state_dir,
        publish_host=settings.publish_host,
        proxy_network=settings.proxy_network,
        compose_command_override=settings.compose_command,
        environ=dict(environ),
    )
    try:
        log.info("compose command: %s", " ".join(detect_compose_command(settings.compose_command)))
    except AgentError as exc:
        log.warning("%s; compose environments will fail", exc)
    # Its own client: the sampler reads Docker on threads of its own.
    stats_client = docker.DockerClient.from_env(environment=dict(environ), timeout=DOCKER_TIMEOUT)
    sampler = Sampler(stats_client)
    pruner = Pruner(client, settings.state_dir, settings.keep_images)
    metrics: MetricsServer | None = None
    if settings.metrics_addr is not None:
        try:
            metrics = serve(settings.metrics_addr, ContainerCollector(sampler, pruner.counts))
        except OSError as exc:
            print(f"portside agent: cannot serve metrics: {exc}", file=sys.stderr)
            sampler.close()
            stats_client.close()
            client.close()
            return 2
        log.info("metrics on %s port %d", settings.metrics_addr[0], metrics.port)
    source = ControlPlaneClient(settings)
    # Its own Docker and HTTP clients: it reads and sends on a thread of its own.
    logs_client = docker.DockerClient.from_env(environment=dict(environ), timeout=DOCKER_TIMEOUT)
    logs_sender = ControlPlaneClient(settings)
    shipper = LogShipper(
        logs_client,
        logs_sender.ship_logs,
        lambda: source.last_good.host if source.last_good is not None else None,
    )
    shipper.start()
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping after this tick", signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    log.info("agent %s starting: %r", AGENT_VERSION, settings)
    try:
        agent_state = AgentState(
            applier,
            settings.publish_host,
            settings.preview_limits,
            sampler=sampler,
            pruner=pruner,
        )
        run_forever(settings, agent_state, source, stop)
    finally:
        shipper.close()
        logs_sender.close()
        logs_client.close()
        if metrics is not None:
            metrics.close()
        sampler.close()
        stats_client.close()
        source.close()
        client.close()
    return 0
