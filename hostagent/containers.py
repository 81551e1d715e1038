"""Single containers on this host: pull and inspect the image, start, wait until
healthy, read the last lines, stop and remove."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import docker.types
import requests

from contracts.agentwire import DesiredEnvironment, RegistryAuth
from contracts.compose_policy import is_routing_label
from hostagent import labels as lbl
from hostagent.errors import (
    AgentError,
    EnvironmentRefused,
    PermanentAgentError,
    TransientAgentError,
)
from hostagent.plan import StartContainer
from hostagent.traefik import traefik_labels

log = logging.getLogger(__name__)

DEFAULT_HEALTH_TIMEOUT = 60.0
STABLE_SECONDS = 2.0
POLL_SECONDS = 0.5
PROBE_TIMEOUT = 2.0
STOP_TIMEOUT = 10
LOG_LINES = 20
MAX_SHOWN = 10
ANY_IPV4 = "0.0.0.0"  # noqa: S104 - a bound address read back, never bound to here


class DeploymentFailed(PermanentAgentError):
    """The new version did not come up healthy; carries its last log lines."""

    def __init__(self, message: str, logs: str | None = None) -> None:
        super().__init__(message)
        self.logs = logs


def restart_policy(text: str) -> dict[str, Any]:
    """Docker's restart policy object from ``unless-stopped`` / ``on-failure:3`` etc."""
    name, _, count = text.partition(":")
    policy: dict[str, Any] = {"Name": name}
    if name == "on-failure" and count:
        policy["MaximumRetryCount"] = int(count)
    return policy


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def docker_error(exc: Exception, what: str) -> AgentError:
    """Map docker SDK errors: client errors are permanent, the rest transient."""
    if isinstance(exc, AgentError):
        return exc
    if isinstance(exc, docker.errors.APIError) and exc.is_client_error():
        return PermanentAgentError(f"{what}: {exc.explanation or exc}")
    return TransientAgentError(f"{what}: {exc}")


# How the engine words a registry's refusal, which it may answer 500 to (Docker 20.10):
# no credentials for a login registry, wrong ones, or a token without the pull scope.
_PULL_REFUSALS = ("no basic auth credentials", "unauthorized", "authentication required", "denied")


def _refused_pull(exc: docker.errors.APIError) -> bool:
    """The registry refused the credentials: pulling again with them cannot help."""
    text = str(exc.explanation or exc).lower()
    return exc.status_code in (401, 403) or any(words in text for words in _PULL_REFUSALS)


@dataclass
class Containers:
    """Carries the Docker client and the host settings a container needs."""

    client: Any
    state_dir: Path
    publish_host: str = ""
    # The network Traefik watches: routed containers join it, and nothing else.
    proxy_network: str = ""
    poll_seconds: float = POLL_SECONDS
    stable_seconds: float = STABLE_SECONDS
    stop_timeout: int = STOP_TIMEOUT

    def ensure_image(self, reference: str, registry: RegistryAuth | None) -> None:
        """Pull ``repo@sha256:…`` (or ``repo:tag``) unless it is already here; with the
        registry's credentials for an image of that registry."""
        try:
            self.client.images.get(reference)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise docker_error(exc, f"cannot inspect image {reference}") from exc
        repository, sep, digest = reference.partition("@")
        auth: dict[str, str] | None = None
        if (
            registry is not None
            and registry.username
            and registry.password
            and repository.startswith(f"{registry.address}/")
        ):
            auth = {"username": registry.username, "password": registry.password}
        try:
            self.client.images.pull(repository, tag=digest if sep else None, auth_config=auth)
        except (docker.errors.APIError, requests.RequestException) as exc:
            if isinstance(exc, docker.errors.APIError) and _refused_pull(exc):
                raise PermanentAgentError(f"not allowed to pull {reference}: {exc}") from exc
            if isinstance(exc, docker.errors.NotFound):
                raise PermanentAgentError(f"image {reference} is not in its registry") from exc
            raise TransientAgentError(f"cannot pull {reference}: {exc}") from exc

    def refuse_routing_labels(self, reference: str) -> None:
        """EnvironmentRefused when the image carries a label only the agent may set.

        Docker copies an image's labels onto every container run from it, where Traefik
        reads them: a ``LABEL traefik.http.routers...`` in a Dockerfile (or its base
        image's) would route any domain to it. The build worker's own mark is no route.
        """
        try:
            attrs = self.client.images.get(reference).attrs
        except docker.errors.APIError as exc:
            raise docker_error(exc, f"cannot inspect image {reference}") from exc
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        found = sorted(key for key in labels if key != lbl.BUILD and is_routing_label(key))
        if found:
            shown = ", ".join(found[:MAX_SHOWN]) + (", ..." if len(found) > MAX_SHOWN else "")
            raise EnvironmentRefused(
                f"image {reference} carries labels only the agent may set: {shown}"
            )

    def container_labels(self, action: StartContainer) -> dict[str, str]:
        spec = action.spec
        return {
            lbl.ENVIRONMENT: spec.name,
            lbl.DEPLOYMENT: str(spec.deployment_id),
            lbl.CONFIG_HASH: action.config_hash,
            lbl.MANAGED: "1",
            lbl.ROLE: lbl.ROLE_APP,
            lbl.KIND: spec.kind,
            lbl.HOST: action.host,
            **traefik_labels(
                spec.name,
                spec.domains,
                spec.port,
                action.routing,
                spec.health_check,
                network=self.proxy_network,
                protection=spec.protection,
            ),
        }

    def start_container(self, action: StartContainer) -> None:
        spec = action.spec
        assert spec.image is not None  # container mode guarantees it (validated)
        self.ensure_image(spec.image, spec.registry)
        self.refuse_routing_labels(spec.image)
        labels = self.container_labels(action)
        kwargs: dict[str, Any] = {
            "name": action.name,
            "detach": True,
            "labels": labels,
            "environment": dict(spec.env),
            "restart_policy": restart_policy(spec.resources.restart),
        }
        if self.proxy_network and "traefik.enable" in labels:
            kwargs["network"] = self.proxy_network
        if spec.resources.cpus:
            kwargs["nano_cpus"] = int(spec.resources.cpus * 1_000_000_000)
        if spec.resources.memory:
            kwargs["mem_limit"] = spec.resources.memory
        if spec.resources.pids:
            kwargs["pids_limit"] = spec.resources.pids
        if self.publish_host and spec.port:
            kwargs["ports"] = {f"{spec.port}/tcp": (self.publish_host, None)}
        logging_config = lbl.log_config(spec)
        if logging_config is not None:
            kwargs["log_config"] = docker.types.LogConfig(
                type=logging_config["driver"], config=logging_config["options"]
            )
        log.info("environment %s: starting %s from %s", spec.name, action.name, spec.image)
        self.client.containers.run(spec.image, **kwargs)

    def container_logs(self, name_or_id: str) -> str | None:
        try:
            raw = self.client.containers.get(name_or_id).logs(
                stdout=True, stderr=True, tail=LOG_LINES
            )
        except docker.errors.APIError:
            return None
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        return text.rstrip("\n") or None

    def discard_container(self, name_or_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(name_or_id).remove(force=True, v=True)

    def stop_container(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(container_id).stop(timeout=self.stop_timeout)

    def remove_container(self, container_id: str, *, volumes: bool = True) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(container_id).remove(force=True, v=volumes)

    def probe_target(self, attrs: Mapping[str, Any], port: int) -> str | None:
        """``host:port`` to reach ``port`` of a container: its published address or its IP."""
        network = attrs.get("NetworkSettings") or {}
        for binding in (network.get("Ports") or {}).get(f"{port}/tcp") or []:
            if binding.get("HostPort"):
                host = binding.get("HostIp") or "127.0.0.1"
                host = "127.0.0.1" if host == ANY_IPV4 else host
                host = "::1" if host == "::" else host
                return _format_address(host, int(binding["HostPort"]))
        ips = [network.get("IPAddress")] + [
            net.get("IPAddress") for net in (network.get("Networks") or {}).values()
        ]
        ip = next((ip for ip in ips if ip), None)
        return f"{ip}:{port}" if ip else None

    def http_ok(self, target: str, path: str) -> bool:
        try:
            response = requests.get(
                f"http://{target}{path}", timeout=PROBE_TIMEOUT, allow_redirects=False
            )
        except requests.RequestException:
            return False
        response.close()
        return response.status_code < 500

    def wait_healthy(self, name: str, spec: DesiredEnvironment) -> None:
        """Until healthy or timeout: HTTP path, else Docker health, else running for 2 s."""
        check = spec.health_check
        timeout = check.timeout if check else DEFAULT_HEALTH_TIMEOUT
        deadline = time.monotonic() + timeout
        running_since: float | None = None
        container = self.client.containers.get(name)
        while True:
            container.reload()
            attrs = container.attrs
            state = attrs.get("State") or {}
            status = state.get("Status")
            if status in ("exited", "dead") or (
                status == "restarting" or int(attrs.get("RestartCount") or 0) > 0
            ):
                raise DeploymentFailed(
                    f"container {name} exited with code {state.get('ExitCode')}",
                    self.container_logs(name),
                )
            now = time.monotonic()
            if status == "running":
                running_since = running_since or now
                health = (state.get("Health") or {}).get("Status")
                if check is not None and spec.port is not None:
                    target = self.probe_target(attrs, spec.port)
                    if target and self.http_ok(target, check.path):
                        return
                elif health is not None:
                    if health == "healthy":
                        return
                elif now - running_since >= self.stable_seconds:
                    return
            if now >= deadline:
                raise DeploymentFailed(
                    f"container {name} was not healthy within {timeout:g} s",
                    self.container_logs(name),
                )
            time.sleep(self.poll_seconds)
