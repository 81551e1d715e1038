"""Execute planned actions against Docker, one environment at a time, each isolated.

An exception in one environment becomes that environment's outcome (with the error and
the new container's last log lines); the others go on. A new container that never gets
healthy is removed again and the old one keeps serving.

Compose files meet the compose policy once more right before ``compose up`` (the last
line: a refused file starts nothing), lose every routing label and published port but
the agent's own, and reach compose as sealed in-memory files, never through a path a
container or another user could change. Every image an environment runs is pulled and
inspected first: one carrying a routing label is refused, and nothing starts.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import docker.types
import requests

from contracts import logdrivers
from contracts.agentwire import DesiredEnvironment, RegistryAuth, Resources
from contracts.compose_policy import (
    Caps,
    ComposeRefused,
    is_routing_label,
    load_and_check,
    parse_memory,
)
from contracts.yamlsafe import dump_yaml
from hostagent import labels as lbl
from hostagent.errors import (
    AgentError,
    EnvironmentRefused,
    PermanentAgentError,
    TransientAgentError,
)
from hostagent.files import (
    make_dirs,
    open_dir,
    read_file,
    remove_file,
    sealed_fd,
    write_file,
)
from hostagent.plan import (
    Action,
    ComposeDown,
    ComposeStartRouted,
    ComposeUp,
    ComposeWaitRouted,
    RemoveContainer,
    RemoveEnvironment,
    StartContainer,
    StopContainer,
    WaitHealthy,
    failure_key,
)
from hostagent.traefik import traefik_labels

log = logging.getLogger(__name__)

DEFAULT_HEALTH_TIMEOUT = 60.0
STABLE_SECONDS = 2.0
POLL_SECONDS = 0.5
PROBE_TIMEOUT = 2.0
STOP_TIMEOUT = 10
COMPOSE_TIMEOUT = 600.0
LOG_LINES = 20
MAX_SHOWN = 10
# Labels a forwarded line carries besides its tag (Docker's ``labels`` log option).
LOG_LABELS = (lbl.ENVIRONMENT, lbl.KIND, lbl.HOST, lbl.DEPLOYMENT)
# The least share of a preview's budget a container may get: Docker's own minimums.
MIN_CPUS = 0.01
MIN_MEMORY = 6 * 1024 * 1024
ANY_IPV4 = "0.0.0.0"  # noqa: S104 - a bound address read back, never bound to here
# What a compose subprocess may see of the agent's environment: never its token.
COMPOSE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR")
COMPOSE_ENV_PREFIXES = ("DOCKER_",)
COMPOSE_DIR = "compose"
COMPOSE_FILE = "docker-compose.yml"
OVERRIDE_FILE = "portside.override.yml"
# The project directory compose resolves relative paths against: empty, private, and
# holding nothing of the agent's, whatever a compose file names relative to it.
EMPTY_DIR = "empty"
# The override's key for the proxy network (declared external, under its real name).
PROXY_NETWORK_KEY = "portside-proxy"
# Compose limit keys the override sets, and where ``deploy.resources.limits`` says the same.
LIMIT_KEYS = (("cpus", "cpus"), ("mem_limit", "memory"), ("pids_limit", "pids"))
# Compose's escaped dollar first, so that it is kept as it is; any other dollar doubled.
_DOLLAR = re.compile(r"\$\$?")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class DeploymentFailed(PermanentAgentError):
    """The new version did not come up healthy; carries its last log lines."""

    def __init__(self, message: str, logs: str | None = None) -> None:
        super().__init__(message)
        self.logs = logs


@dataclass
class EnvironmentOutcome:
    """What applying one environment's actions came to; ``failure_key`` when it failed."""

    name: str
    state: str | None = None  # "failed", "refused", "starting" (transient), "removed" or None
    error: str | None = None
    logs: str | None = None
    failure_key: str | None = None
    deployment_id: int | None = None
    actions: list[str] = field(default_factory=list)


def detect_compose_command(
    override: Sequence[str] | None, run: Runner = subprocess.run
) -> tuple[str, ...]:
    """``docker compose`` (v2) when it works, else ``docker-compose`` (v1), or the override."""
    if override:
        return tuple(override)
    for candidate in (("docker", "compose"), ("docker-compose",)):
        try:
            result = run(
                [*candidate, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if result.returncode == 0:
            return candidate
    raise PermanentAgentError("neither `docker compose` nor `docker-compose` works on this host")


def restart_policy(text: str) -> dict[str, Any]:
    """Docker's restart policy object from ``unless-stopped`` / ``on-failure:3`` etc."""
    name, _, count = text.partition(":")
    policy: dict[str, Any] = {"Name": name}
    if name == "on-failure" and count:
        policy["MaximumRetryCount"] = int(count)
    return policy


def compose_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The minimal environment for compose: no agent secrets to interpolate into files."""
    return {
        key: value
        for key, value in environ.items()
        if key in COMPOSE_ENV_KEYS or key.startswith(COMPOSE_ENV_PREFIXES)
    }


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _docker_error(exc: Exception, what: str) -> AgentError:
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
class Applier:
    """Carries the Docker client and host settings the actions need."""

    client: Any
    state_dir: Path
    publish_host: str = ""
    # The network Traefik watches: routed containers join it, and nothing else.
    proxy_network: str = ""
    compose_command_override: Sequence[str] | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    run: Runner = subprocess.run
    poll_seconds: float = POLL_SECONDS
    stable_seconds: float = STABLE_SECONDS
    stop_timeout: int = STOP_TIMEOUT
    _compose: tuple[str, ...] | None = field(default=None, init=False, repr=False)

    # -- entry point ---------------------------------------------------------------------

    def apply(self, actions: Iterable[Action]) -> dict[str, EnvironmentOutcome]:
        """Run each environment's actions in order; stop that environment at its first error."""
        by_env: dict[str, list[Action]] = {}
        for action in actions:
            by_env.setdefault(action.environment, []).append(action)
        outcomes: dict[str, EnvironmentOutcome] = {}
        for name, env_actions in by_env.items():
            outcomes[name] = self._apply_environment(name, env_actions)
        return outcomes

    def _apply_environment(self, name: str, actions: list[Action]) -> EnvironmentOutcome:
        outcome = EnvironmentOutcome(name)
        started: StartContainer | None = None
        for action in actions:
            outcome.actions.append(type(action).__name__)
            try:
                if isinstance(action, StartContainer):
                    started = action
                    outcome.deployment_id = action.spec.deployment_id
                    self.start_container(action)
                elif isinstance(action, WaitHealthy):
                    self.wait_healthy(action.name, action.spec)
                elif isinstance(action, StopContainer):
                    self.stop_container(action.container_id)
                elif isinstance(action, RemoveContainer):
                    self.remove_container(action.container_id)
                elif isinstance(action, ComposeUp):
                    outcome.deployment_id = action.spec.deployment_id
                    self.compose_up(action)
                elif isinstance(action, ComposeStartRouted):
                    outcome.deployment_id = action.spec.deployment_id
                    self.compose_start_routed(action)
                elif isinstance(action, ComposeWaitRouted):
                    self.compose_wait_routed(action)
                elif isinstance(action, ComposeDown):
                    self.compose_down(action.environment, remove_volumes=action.remove_volumes)
                elif isinstance(action, RemoveEnvironment):
                    outcome.deployment_id = action.deployment_id
                    self.remove_environment(action)
                    outcome.state = "removed"
            except Exception as exc:
                self._record_failure(outcome, action, started, exc)
                break
        return outcome

    def _record_failure(
        self,
        outcome: EnvironmentOutcome,
        action: Action,
        started: StartContainer | None,
        exc: Exception,
    ) -> None:
        error = _docker_error(exc, f"{type(action).__name__} failed")
        logs = getattr(error, "logs", None)
        if started is not None and isinstance(action, StartContainer | WaitHealthy):
            # Never leave a broken new container behind; the old one keeps serving.
            logs = logs or self.container_logs(started.name)
            self.discard_container(started.name)
        if isinstance(action, ComposeStartRouted | ComposeWaitRouted):
            # The same for a compose switch: the old routed container keeps serving.
            last_lines = self.discard_routed(action.spec, action.config_hash)
            logs = logs or last_lines
        permanent = isinstance(error, PermanentAgentError)
        if isinstance(action, StartContainer | WaitHealthy) and started is not None and permanent:
            outcome.failure_key = failure_key(started.spec, started.config_hash)
        elif isinstance(action, ComposeUp | ComposeStartRouted | ComposeWaitRouted) and permanent:
            outcome.failure_key = failure_key(action.spec, action.config_hash)
        if isinstance(error, EnvironmentRefused):
            outcome.state = "refused"
        else:
            outcome.state = "failed" if outcome.failure_key else "starting"
        outcome.error = str(error)
        outcome.logs = logs
        log.warning("environment %s: %s", outcome.name, error)

    # -- containers ----------------------------------------------------------------------

    def ensure_image(self, reference: str, registry: RegistryAuth | None) -> None:
        """Pull ``repo@sha256:…`` (or ``repo:tag``) unless it is already here; with the
        registry's credentials for an image of that registry."""
        try:
            self.client.images.get(reference)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise _docker_error(exc, f"cannot inspect image {reference}") from exc
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
            raise _docker_error(exc, f"cannot inspect image {reference}") from exc
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
        logging_config = log_config(spec)
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

    # -- health --------------------------------------------------------------------------

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

    # -- compose -------------------------------------------------------------------------

    @property
    def compose_command(self) -> tuple[str, ...]:
        if self._compose is None:
            self._compose = detect_compose_command(self.compose_command_override, self.run)
        return self._compose

    def compose_dir(self, environment: str) -> Path:
        return self.state_dir / COMPOSE_DIR / environment

    def checked_compose(self, spec: DesiredEnvironment) -> dict[str, Any]:
        """The compose file after the policy (the last line), made safe to run.

        Refused: EnvironmentRefused naming every key path, and nothing is started.
        """
        try:
            document = load_and_check(
                spec.compose or "",
                extra_allowed=spec.allowed_compose_keys,
                caps=resource_caps(spec.resources),
            )
        except ComposeRefused as exc:
            raise EnvironmentRefused(str(exc)) from None
        return sanitized_compose(document)

    def override_file(
        self, action: ComposeUp | ComposeStartRouted, document: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Labels, runtime env, restart policy, limits (a preview's shared by its services)
        and the one published port, per service; the services Traefik routes to join the
        proxy network (declared external), keeping their own networks."""
        spec = action.spec
        services: Mapping[str, Any] = document.get("services") or {}
        if self.proxy_network and PROXY_NETWORK_KEY in (document.get("networks") or {}):
            raise EnvironmentRefused(
                f"compose file refused: networks.{PROXY_NETWORK_KEY}: the agent's own name"
            )
        network = self.proxy_network
        common = {
            lbl.ENVIRONMENT: spec.name,
            lbl.DEPLOYMENT: str(spec.deployment_id),
            lbl.CONFIG_HASH: action.config_hash,
            lbl.MANAGED: "1",
            lbl.ROLE: lbl.ROLE_COMPOSE,
            lbl.KIND: spec.kind,
            lbl.HOST: action.host,
        }
        # Compose interpolates "$": escape it so values arrive as they were given.
        env = {key: value.replace("$", "$$") for key, value in spec.env.items()}
        override: dict[str, Any] = {}
        if "version" in document:
            override["version"] = document["version"]
        out: dict[str, Any] = {}
        for name, service in services.items():
            entry: dict[str, Any] = {"labels": dict(common)}
            if env:
                entry["environment"] = dict(env)
            if "restart" not in service:
                entry["restart"] = spec.resources.restart
            entry.update(service_limits(spec, service, len(services)))
            logging_config = log_config(spec, name)
            if logging_config is not None:
                options = logging_config["options"]
                entry["logging"] = {
                    "driver": logging_config["driver"],
                    "options": {key: value.replace("$", "$$") for key, value in options.items()},
                }
            if name == spec.routed_service:
                entry["labels"].update(
                    {
                        key: value.replace("$", "$$")
                        for key, value in traefik_labels(
                            spec.name,
                            spec.domains,
                            spec.port,
                            action.routing,
                            spec.health_check,
                            network=network,
                            protection=spec.protection,
                        ).items()
                    }
                )
                if self.publish_host and spec.port:
                    entry["ports"] = [f"{self.publish_host}::{spec.port}"]
            for route in spec.routes:
                if route.service == name:
                    router = f"{spec.name}-{re.sub(r'[^a-z0-9-]', '-', name.lower())}"
                    labels = traefik_labels(
                        router,
                        route.domains,
                        route.port,
                        action.routing,
                        network=network,
                        protection=spec.protection,
                    )
                    entry["labels"].update({k: v.replace("$", "$$") for k, v in labels.items()})
            if network and "traefik.enable" in entry["labels"]:
                # Without networks of its own a service is on "default": keep it there.
                entry["networks"] = {key: {} for key in service.get("networks") or ["default"]}
                entry["networks"][PROXY_NETWORK_KEY] = {}
            out[name] = entry
        override["services"] = out
        if network and any("networks" in entry for entry in out.values()):
            override["networks"] = {PROXY_NETWORK_KEY: {"external": True, "name": network}}
        return override

    def run_compose(self, environment: str, texts: Sequence[str], *args: str) -> str:
        """Run compose on ``texts`` (never a shell); raise with its stderr tail.

        Each file reaches compose as a sealed in-memory file (``/dev/fd/N``), so nothing
        can swap it between the agent's checks and compose reading it; relative paths
        resolve against an empty private directory.
        """
        project_dir = make_dirs(self.state_dir, EMPTY_DIR)
        fds = [sealed_fd(text, f"{environment}-{index}") for index, text in enumerate(texts)]
        command = [*self.compose_command, "-p", environment]
        command += ["--project-directory", str(project_dir)]
        for fd in fds:
            command += ["-f", f"/dev/fd/{fd}"]
        command += list(args)
        try:
            result = self.run(
                command,
                capture_output=True,
                text=True,
                timeout=COMPOSE_TIMEOUT,
                check=False,
                cwd=str(project_dir),
                env=compose_environment(self.environ),
                pass_fds=tuple(fds),
            )
        except subprocess.TimeoutExpired as exc:
            raise TransientAgentError(f"compose {args[0]} timed out") from exc
        except OSError as exc:
            raise PermanentAgentError(f"cannot run {command[0]}: {exc}") from exc
        finally:
            for fd in fds:
                os.close(fd)
        if result.returncode != 0:
            tail = "\n".join(
                (result.stderr or result.stdout or "").strip().splitlines()[-LOG_LINES:]
            )
            raise DeploymentFailed(
                f"compose {args[0]} for {environment} exited with {result.returncode}", tail
            )
        return result.stdout or ""

    def project_containers(self, environment: str) -> list[Any]:
        return list(
            self.client.containers.list(
                all=True,
                filters={
                    "label": [f"{lbl.ENVIRONMENT}={environment}", f"{lbl.ROLE}={lbl.ROLE_COMPOSE}"]
                },
            )
        )

    def compose_texts(self, action: ComposeUp | ComposeStartRouted) -> list[str]:
        """The checked file and the agent's override, every image pulled and inspected
        before anything is written or started; both kept for operators and ``down``."""
        spec = action.spec
        document = self.checked_compose(spec)
        texts = [dump_yaml(document), dump_yaml(self.override_file(action, document))]
        # Every image is here and inspected before anything is written or started.
        for image in compose_images(document):
            self.ensure_image(image, spec.registry)
            self.refuse_routing_labels(image)
        with open_dir(self.state_dir, COMPOSE_DIR, spec.name) as directory:
            # Kept for operators and for ``down``; ``up`` runs the texts themselves.
            write_file(directory, COMPOSE_FILE, texts[0])
            write_file(directory, OVERRIDE_FILE, texts[1])
        return texts

    def compose_up(self, action: ComposeUp) -> None:
        spec = action.spec
        texts = self.compose_texts(action)
        only = ["--no-deps", *action.services] if action.services else []
        log.info(
            "environment %s: compose up %s(deployment %s)",
            spec.name,
            " ".join(action.services) + " " if action.services else "",
            spec.deployment_id,
        )
        self.run_compose(
            spec.name,
            texts,
            "up",
            "-d",
            "--remove-orphans",
            "--timeout",
            str(self.stop_timeout),
            *only,
        )
        self.wait_compose_healthy(spec, action.services)

    def compose_start_routed(self, action: ComposeStartRouted) -> None:
        """The routed service's new container beside the old: compose keeps the old one
        (``--no-recreate``) and creates one more of the new config under the next number,
        with the same labels, networks and a port of its own."""
        spec = action.spec
        routed = spec.routed_service
        assert routed is not None  # planned for a routed service only
        texts = self.compose_texts(action)
        log.info("environment %s: starting a new %s beside the old", spec.name, routed)
        beside = ["--no-deps", "--no-recreate", "--scale", f"{routed}={action.replicas}", routed]
        self.run_compose(spec.name, texts, "up", "-d", "--remove-orphans", *beside)

    def routed_containers(self, spec: DesiredEnvironment, config_hash: str) -> list[Any]:
        """The routed service's containers of ``config_hash``, oldest first."""
        found = [
            container
            for container in self.project_containers(spec.name)
            if container.labels.get(lbl.COMPOSE_SERVICE) == spec.routed_service
            and container.labels.get(lbl.CONFIG_HASH) == config_hash
        ]
        return sorted(found, key=lambda container: str(container.attrs.get("Created", "")))

    def compose_wait_routed(self, action: ComposeWaitRouted) -> None:
        """The new routed container passes the check a single container passes."""
        new = self.routed_containers(action.spec, action.config_hash)
        if not new:
            raise DeploymentFailed(
                f"compose did not start a new {action.spec.routed_service} container"
            )
        self.wait_healthy(new[-1].name, action.spec)

    def discard_routed(self, spec: DesiredEnvironment, config_hash: str) -> str | None:
        """Remove the routed containers of a failed switch; the newest one's last lines."""
        new = self.routed_containers(spec, config_hash)
        logs = self.container_logs(new[-1].id) if new else None
        for container in new:
            self.discard_container(container.id)
        return logs

    def wait_compose_healthy(self, spec: DesiredEnvironment, services: Sequence[str] = ()) -> None:
        """Every service (of ``services`` if given) running or finished with 0, then the
        routed one answering when it is among them."""
        check = spec.health_check
        timeout = check.timeout if check else DEFAULT_HEALTH_TIMEOUT
        deadline = time.monotonic() + timeout
        stable_since: float | None = None
        while True:
            containers = [
                container
                for container in self.project_containers(spec.name)
                if not services or container.labels.get(lbl.COMPOSE_SERVICE) in services
            ]
            ready = bool(containers)
            for container in containers:
                attrs = container.attrs
                state = attrs.get("State") or {}
                status = state.get("Status")
                finished_ok = status == "exited" and state.get("ExitCode") == 0
                if status == "restarting" or (status in ("exited", "dead") and not finished_ok):
                    raise DeploymentFailed(
                        f"compose service {container.name} exited with code "
                        f"{state.get('ExitCode')}",
                        self.container_logs(container.id),
                    )
                health = (state.get("Health") or {}).get("Status")
                if not finished_ok and (status != "running" or health not in (None, "healthy")):
                    ready = False
            now = time.monotonic()
            if ready:
                stable_since = stable_since or now
                routed = self._routed(containers, spec)
                if check is not None and routed is not None and spec.port is not None:
                    target = self.probe_target(routed.attrs, spec.port)
                    if target and self.http_ok(target, check.path):
                        return
                elif now - stable_since >= self.stable_seconds:
                    return
            else:
                stable_since = None
            if now >= deadline:
                routed = self._routed(containers, spec)
                raise DeploymentFailed(
                    f"compose project {spec.name} was not healthy within {timeout:g} s",
                    self.container_logs(routed.id) if routed is not None else None,
                )
            time.sleep(self.poll_seconds)

    @staticmethod
    def _routed(containers: list[Any], spec: DesiredEnvironment) -> Any | None:
        for container in containers:
            labels = (container.attrs.get("Config") or {}).get("Labels") or {}
            if labels.get(lbl.COMPOSE_SERVICE) == spec.routed_service:
                return container
        return None

    def compose_down(self, environment: str, *, remove_volumes: bool) -> None:
        """``down`` with the stored files; without them, remove by label (same result)."""
        try:
            with open_dir(self.state_dir, COMPOSE_DIR, environment, create=False) as directory:
                stored = [read_file(directory, name) for name in (COMPOSE_FILE, OVERRIDE_FILE)]
        except FileNotFoundError:
            stored = []
        texts = [text for text in stored if text is not None]
        if texts:
            args = ["down", "--remove-orphans", "--timeout", str(self.stop_timeout)]
            args += ["--volumes"] if remove_volumes else []
            self.run_compose(environment, texts, *args)
        for container in self.project_containers(environment):
            self.remove_container(container.id, volumes=remove_volumes)
        self._remove_project_leftovers(environment, remove_volumes=remove_volumes)
        with (
            contextlib.suppress(FileNotFoundError),
            open_dir(self.state_dir, COMPOSE_DIR, create=False) as parent,
        ):
            with open_dir(self.state_dir, COMPOSE_DIR, environment, create=False) as directory:
                for name in os.listdir(directory):
                    remove_file(directory, name)
            os.rmdir(environment, dir_fd=parent)

    def _remove_project_leftovers(self, project: str, *, remove_volumes: bool) -> None:
        label = f"{lbl.COMPOSE_PROJECT}={project}"
        for network in self.client.networks.list(filters={"label": label}):
            with contextlib.suppress(docker.errors.APIError):
                network.remove()
        if remove_volumes:
            for volume in self.client.volumes.list(filters={"label": label}):
                with contextlib.suppress(docker.errors.APIError):
                    volume.remove(force=True)

    def remove_environment(self, action: RemoveEnvironment) -> None:
        log.info("environment %s: no longer desired, removing it", action.environment)
        if action.compose:
            self.compose_down(action.environment, remove_volumes=action.remove_volumes)
        for container_id in action.container_ids:
            self.remove_container(container_id, volumes=action.remove_volumes)


def log_config(
    spec: DesiredEnvironment, compose_service: str | None = None
) -> dict[str, Any] | None:
    """The Docker logging driver of the environment's containers (of ``compose_service``
    in a compose environment), tagged with its labels; None for Docker's default."""
    if spec.log_driver is None:
        return None
    labels = [*LOG_LABELS, *([lbl.COMPOSE_SERVICE] if compose_service else [])]
    tag = logdrivers.tag(spec.name, compose_service)
    return {
        "driver": spec.log_driver.driver,
        "options": logdrivers.docker_options(spec.log_driver, tag, labels),
    }


def service_limits(
    spec: DesiredEnvironment, service: Mapping[str, Any], count: int
) -> dict[str, Any]:
    """The limits the override gives one of the ``count`` services of a compose file.

    Production: the environment's limits, each container, unless the file sets its own
    (within the caps: the policy checked). A preview: its limits are a budget for the
    whole environment, so each service gets an equal share of it, or what the file asks
    if that is less; EnvironmentRefused when a share is below what Docker can run.
    """
    resources = spec.resources
    limits = {"cpus": resources.cpus, "mem_limit": resources.memory, "pids_limit": resources.pids}
    if spec.kind != "preview":
        return {key: value for key, value in limits.items() if value and key not in service}
    shares: dict[str, Any] = {}
    if resources.cpus:
        shares["cpus"] = math.floor(resources.cpus * 1000 / count) / 1000
    if resources.memory_bytes:
        shares["mem_limit"] = resources.memory_bytes // count
    if resources.pids:
        shares["pids_limit"] = resources.pids // count
    for key, least in (("cpus", MIN_CPUS), ("mem_limit", MIN_MEMORY), ("pids_limit", 1)):
        if key in shares and shares[key] < least:
            raise EnvironmentRefused(
                f"compose file refused: services: this preview's {key} budget of "
                f"{limits[key]} shared by {count} services leaves less than {least} each"
            )
    own = {
        "cpus": float(service["cpus"]) if "cpus" in service else None,
        "mem_limit": parse_memory(service["mem_limit"]) if "mem_limit" in service else None,
        "pids_limit": service.get("pids_limit"),
    }
    return {
        key: share if own[key] is None else min(share, own[key]) for key, share in shares.items()
    }


def resource_caps(resources: Resources) -> Caps:
    """The most a compose file may ask for: the environment's own (effective) limits."""
    return Caps(cpus=resources.cpus, memory_bytes=resources.memory_bytes, pids=resources.pids)


def _container_port(entry: Any) -> Any:
    """The container side of a ``ports`` entry (``8080``, ``"80:8080/tcp"``, long syntax)."""
    if isinstance(entry, Mapping):
        target = entry.get("target")
        protocol = entry.get("protocol")
        return f"{target}/{protocol}" if protocol else target
    if isinstance(entry, str):
        port, slash, protocol = entry.partition("/")
        return port.rsplit(":", 1)[-1] + slash + protocol
    return entry


def _without_routing_labels(labels: Any) -> Any:
    """``labels`` (mapping or ``key=value`` list) minus every key the agent alone writes.

    The policy's own test (any case, surrounding blanks) so that nothing it would refuse
    gets through when an admin allowed ``labels`` unchecked.
    """
    if isinstance(labels, Mapping):
        return {key: value for key, value in labels.items() if not is_routing_label(str(key))}
    if isinstance(labels, list):
        return [item for item in labels if not is_routing_label(str(item).partition("=")[0])]
    return labels


def sanitized_compose(document: Mapping[str, Any]) -> dict[str, Any]:
    """A checked compose document with the agent's rules applied, whatever was allowed.

    No routing labels but the agent's own; no published ports (``ports`` become
    ``expose``: the agent publishes the routed port itself); limits written the way both
    compose v1 and v2 apply them (``deploy.resources.limits`` moved to ``cpus``,
    ``mem_limit`` and ``pids_limit``); no variable of the agent's environment (compose
    would substitute ``${HOME}`` or ``$DOCKER_HOST`` from it): every value is literal.
    """
    result = copy.deepcopy(dict(document))
    for service in (result.get("services") or {}).values():
        if "labels" in service:
            service["labels"] = _without_routing_labels(service["labels"])
        ports = service.pop("ports", None) or []
        if ports:
            service["expose"] = [*(service.get("expose") or []), *map(_container_port, ports)]
        deploy = service.get("deploy")
        if isinstance(deploy, dict) and isinstance(deploy.get("resources"), dict):
            limits = deploy["resources"].pop("limits", None) or {}
            for key, deploy_key in LIMIT_KEYS:
                if deploy_key in limits and key not in service:
                    value = limits[deploy_key]
                    service[key] = float(value) if key == "cpus" else value
            if not deploy["resources"]:
                del deploy["resources"]
            if not deploy:
                del service["deploy"]
    for section in ("volumes", "networks"):
        for item in (result.get(section) or {}).values():
            if isinstance(item, dict) and "labels" in item:
                item["labels"] = _without_routing_labels(item["labels"])
    literal: dict[str, Any] = _without_interpolation(result)
    return literal


def _without_interpolation(value: Any) -> Any:
    """``value`` with every string value made literal for compose (keys are never
    interpolated, so they stay): a lone ``$`` becomes ``$$``, and a ``$$`` (compose's
    own escape for a literal ``$``) is kept, so ``${HOME}`` reaches the container as
    written instead of the agent's home directory, and ``$$X`` still means ``$X``."""
    if isinstance(value, str):
        return _DOLLAR.sub("$$", value)
    if isinstance(value, Mapping):
        return {key: _without_interpolation(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_interpolation(item) for item in value]
    return value


def compose_images(document: Mapping[str, Any]) -> list[str]:
    """Each image a sanitised compose document runs, once (``$$`` read back as the ``$``
    compose makes of it): the agent pulls and inspects them all before ``compose up``."""
    images: list[str] = []
    for service in (document.get("services") or {}).values():
        image = service.get("image") if isinstance(service, Mapping) else None
        if isinstance(image, str) and image.replace("$$", "$") not in images:
            images.append(image.replace("$$", "$"))
    return images


def describe(actions: Iterable[Action]) -> list[str]:
    """One line per action for the log, without the runtime env (it holds secrets)."""
    lines = []
    for action in actions:
        if isinstance(action, StartContainer | WaitHealthy | StopContainer | RemoveContainer):
            lines.append(f"{type(action).__name__} {action.environment} {action.name}")
        else:
            lines.append(f"{type(action).__name__} {action.environment}")
    return lines


__all__ = [
    "Applier",
    "DeploymentFailed",
    "EnvironmentOutcome",
    "compose_images",
    "describe",
    "detect_compose_command",
    "failure_key",
    "resource_caps",
    "sanitized_compose",
    "service_limits",
]
