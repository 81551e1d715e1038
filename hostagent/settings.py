"""The agent's settings: one frozen object built once from ``PORTSIDE_*`` variables."""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from contracts.agentwire import MEMORY_RE
from contracts.environ import FileAwareEnviron, SettingFileError
from contracts.urls import ALLOW_INSECURE_VARIABLE, url_refusal
from hostagent.errors import AgentConfigError
from hostagent.snapshot import PreviewLimits

DEFAULT_INTERVAL = 10.0
MAX_INTERVAL = 3600.0
MAX_CPUS = 1024.0
DEFAULT_KEEP_IMAGES = 3
MAX_KEEP_IMAGES = 100
# Docker's rule for a network name.
NETWORK_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")


def _default_state_dir(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "share" / "portside" / "agent"


@dataclass(frozen=True)
class AgentSettings:
    """What the agent needs to know about its place in the world; the token never shows."""

    url: str
    token: str
    interval: float = DEFAULT_INTERVAL
    publish_host: str = ""
    state_dir: Path = Path(".")
    compose_command: tuple[str, ...] | None = None
    preview_limits: PreviewLimits = PreviewLimits()
    proxy_network: str = ""
    # (host, port) of the Prometheus endpoint; None: off.
    metrics_addr: tuple[str, int] | None = None
    keep_images: int = DEFAULT_KEEP_IMAGES

    def __repr__(self) -> str:
        return (
            f"AgentSettings(url={self.url!r}, token='***', interval={self.interval!r}, "
            f"publish_host={self.publish_host!r}, state_dir={str(self.state_dir)!r}, "
            f"compose_command={self.compose_command!r}, "
            f"preview_limits={self.preview_limits!r}, proxy_network={self.proxy_network!r}, "
            f"metrics_addr={self.metrics_addr!r}, keep_images={self.keep_images!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AgentSettings:
        """Read and check every variable; raise AgentConfigError naming the bad one.

        Any of them may come from a file (``PORTSIDE_TOKEN_FILE``), as for every process.
        """
        try:
            return cls._from_env(FileAwareEnviron(environ))
        except SettingFileError as exc:
            raise AgentConfigError(str(exc)) from None

    @classmethod
    def _from_env(cls, environ: Mapping[str, str]) -> AgentSettings:
        url = environ.get("PORTSIDE_URL", "").strip().rstrip("/")
        if not url:
            raise AgentConfigError("PORTSIDE_URL is required (the control plane's URL)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AgentConfigError("PORTSIDE_URL must be an http:// or https:// URL")
        refusal = url_refusal(
            url, allow_insecure=environ.get(ALLOW_INSECURE_VARIABLE, "").strip() == "1"
        )
        if refusal is not None:
            raise AgentConfigError(refusal)
        token = environ.get("PORTSIDE_TOKEN", "").strip()
        if not token:
            raise AgentConfigError("PORTSIDE_TOKEN is required (this host's agent token)")
        raw_interval = environ.get("PORTSIDE_AGENT_INTERVAL", "").strip()
        interval = DEFAULT_INTERVAL
        if raw_interval:
            try:
                interval = float(raw_interval)
            except ValueError:
                raise AgentConfigError(
                    "PORTSIDE_AGENT_INTERVAL must be a number of seconds"
                ) from None
            if not 0 < interval <= MAX_INTERVAL:
                raise AgentConfigError(
                    f"PORTSIDE_AGENT_INTERVAL must be between 0 and {MAX_INTERVAL:g} seconds"
                )
        publish_host = environ.get("PORTSIDE_AGENT_PUBLISH_HOST", "").strip()
        if any(ch.isspace() or ch in "/:" for ch in publish_host) and not _is_ipv6(publish_host):
            raise AgentConfigError("PORTSIDE_AGENT_PUBLISH_HOST must be a bare address")
        proxy_network = environ.get("PORTSIDE_AGENT_PROXY_NETWORK", "").strip()
        if proxy_network and not NETWORK_NAME_RE.fullmatch(proxy_network):
            raise AgentConfigError("PORTSIDE_AGENT_PROXY_NETWORK must be a Docker network name")
        raw_dir = environ.get("PORTSIDE_AGENT_STATE_DIR", "").strip()
        state_dir = Path(raw_dir).expanduser() if raw_dir else _default_state_dir(environ)
        raw_compose = environ.get("PORTSIDE_COMPOSE_COMMAND", "").strip()
        compose: tuple[str, ...] | None = None
        if raw_compose:
            try:
                compose = tuple(shlex.split(raw_compose))
            except ValueError as exc:
                raise AgentConfigError(f"PORTSIDE_COMPOSE_COMMAND does not parse: {exc}") from None
        return cls(
            url=url,
            token=token,
            interval=interval,
            publish_host=publish_host,
            state_dir=state_dir,
            compose_command=compose or None,
            preview_limits=_preview_limits(environ),
            proxy_network=proxy_network,
            metrics_addr=_metrics_addr(environ.get("PORTSIDE_AGENT_METRICS_ADDR", "").strip()),
            keep_images=_keep_images(environ.get("PORTSIDE_AGENT_KEEP_IMAGES", "").strip()),
        )


def _metrics_addr(raw: str) -> tuple[str, int] | None:
    """``PORT`` (loopback), ``ADDRESS:PORT`` or ``[IPv6]:PORT``; empty: no endpoint.

    The address is an IP literal or ``localhost``: the metrics name every environment, so
    the operator says exactly where they are served, and a bare port stays on loopback.
    """
    if not raw:
        return None
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text) if port_text.isdigit() else 0
    if not 0 < port < 65536 or not (host == "localhost" or _is_ip(host)):
        raise AgentConfigError(
            "PORTSIDE_AGENT_METRICS_ADDR must be PORT, ADDRESS:PORT or [IPv6]:PORT "
            "(an IP address or localhost)"
        )
    return host, port


def _keep_images(raw: str) -> int:
    """How many earlier deployments' images each environment keeps for rollbacks."""
    if not raw:
        return DEFAULT_KEEP_IMAGES
    keep = int(raw) if raw.isdigit() else -1
    if not 0 <= keep <= MAX_KEEP_IMAGES:
        raise AgentConfigError(
            f"PORTSIDE_AGENT_KEEP_IMAGES must be a whole number from 0 to {MAX_KEEP_IMAGES}"
        )
    return keep


def _preview_limits(environ: Mapping[str, str]) -> PreviewLimits:
    """``PORTSIDE_AGENT_PREVIEW_CPUS|MEMORY|PIDS|MAX_SERVICES``; defaults: PreviewLimits'."""
    defaults = PreviewLimits()
    raw_cpus = environ.get("PORTSIDE_AGENT_PREVIEW_CPUS", "").strip()
    raw_memory = environ.get("PORTSIDE_AGENT_PREVIEW_MEMORY", "").strip().lower()
    raw_pids = environ.get("PORTSIDE_AGENT_PREVIEW_PIDS", "").strip()
    raw_services = environ.get("PORTSIDE_AGENT_PREVIEW_MAX_SERVICES", "").strip()
    cpus, pids = defaults.cpus, defaults.pids
    if raw_cpus:
        try:
            cpus = float(raw_cpus)
        except ValueError:
            cpus = 0.0
        if not 0 < cpus <= MAX_CPUS:
            raise AgentConfigError(
                f"PORTSIDE_AGENT_PREVIEW_CPUS must be a number of CPUs (0 to {MAX_CPUS:g})"
            )
    if raw_memory and not MEMORY_RE.fullmatch(raw_memory):
        raise AgentConfigError("PORTSIDE_AGENT_PREVIEW_MEMORY must look like 512m or 1g")
    if raw_pids:
        pids = int(raw_pids) if raw_pids.isdigit() else 0
        if pids < 1:
            raise AgentConfigError("PORTSIDE_AGENT_PREVIEW_PIDS must be a positive integer")
    services = defaults.services
    if raw_services:
        services = int(raw_services) if raw_services.isdigit() else 0
        if services < 1:
            raise AgentConfigError("PORTSIDE_AGENT_PREVIEW_MAX_SERVICES must be a positive integer")
    return PreviewLimits(
        cpus=cpus, memory=raw_memory or defaults.memory, pids=pids, services=services
    )


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_ipv6(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).version == 6
    except ValueError:
        return False
