"""Execute planned actions against Docker, one environment at a time, each isolated.

An exception in one environment becomes that environment's outcome (with the error and
the new container's last log lines); the others go on. A new container that never gets
healthy is removed again and the old one keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import requests
import yaml

from hostagent import labels as lbl
from hostagent.desired import DesiredEnvironment, RegistryAuth, traefik_labels
from hostagent.errors import AgentError, PermanentAgentError, TransientAgentError
from hostagent.plan import (
    Action,
    ComposeDown,
    ComposeUp,
    RemoveContainer,
    RemoveEnvironment,
    StartContainer,
    StopContainer,
    WaitHealthy,
    failure_key,
)

log = logging.getLogger(__name__)

DEFAULT_HEALTH_TIMEOUT = 60.0
STABLE_SECONDS = 2.0
POLL_SECONDS = 0.5
PROBE_TIMEOUT = 2.0
STOP_TIMEOUT = 10
COMPOSE_TIMEOUT = 600.0
LOG_LINES = 20
ANY_IPV4 = "0.0.0.0"  # noqa: S104 - a bound address read back, never bound to here
# What a compose subprocess may see of the agent's environment: never its token.
COMPOSE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR")
COMPOSE_ENV_PREFIXES = ("DOCKER_",)

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
    state: str | None = None  # "failed", "starting" (transient error), "removed" or None
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


def _write_private(path: Path, text: str) -> None:
    """Atomic write, readable by the agent only (the files may carry secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _docker_error(exc: Exception, what: str) -> AgentError:
    """Map docker SDK errors: client errors are permanent, the rest transient."""
    if isinstance(exc, AgentError):
        return exc
    if isinstance(exc, docker.errors.APIError) and exc.is_client_error():
        return PermanentAgentError(f"{what}: {exc.explanation or exc}")
    return TransientAgentError(f"{what}: {exc}")


@dataclass
class Applier:
    """Carries the Docker client and host settings the actions need."""

    client: Any
    state_dir: Path
    publish_host: str = ""
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
        permanent = isinstance(error, PermanentAgentError)
        if isinstance(action, StartContainer | WaitHealthy) and started is not None and permanent:
            outcome.failure_key = failure_key(started.spec, started.config_hash)
        elif isinstance(action, ComposeUp) and permanent:
            outcome.failure_key = failure_key(action.spec, action.config_hash)
        outcome.state = "failed" if outcome.failure_key else "starting"
        outcome.error = str(error)
        outcome.logs = logs
        log.warning("environment %s: %s", outcome.name, error)

    # -- containers ----------------------------------------------------------------------

    def ensure_image(self, reference: str, registry: RegistryAuth | None) -> None:
        """Pull ``repo@sha256:…`` unless it is already here; with credentials if given."""
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
        except docker.errors.NotFound as exc:
            raise PermanentAgentError(f"image {reference} is not in its registry") from exc
        except (docker.errors.APIError, requests.RequestException) as exc:
            if isinstance(exc, docker.errors.APIError) and exc.status_code in (401, 403):
                raise PermanentAgentError(f"not allowed to pull {reference}") from exc
            raise TransientAgentError(f"cannot pull {reference}: {exc}") from exc

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
            **traefik_labels(spec.name, spec.domains, spec.port, action.routing, spec.health_check),
        }

    def start_container(self, action: StartContainer) -> None:
        spec = action.spec
        assert spec.image is not None  # container mode guarantees it (validated)
        self.ensure_image(spec.image, spec.registry)
        kwargs: dict[str, Any] = {
            "name": action.name,
            "detach": True,
            "labels": self.container_labels(action),
            "environment": dict(spec.env),
            "restart_policy": restart_policy(spec.resources.restart),
        }
        if spec.resources.cpus:
            kwargs["nano_cpus"] = int(spec.resources.cpus * 1_000_000_000)
        if spec.resources.memory:
            kwargs["mem_limit"] = spec.resources.memory
        if self.publish_host and spec.port:
            kwargs["ports"] = {f"{spec.port}/tcp": (self.publish_host, None)}
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
        return self.state_dir / "compose" / environment

    def override_file(self, action: ComposeUp) -> dict[str, Any]:
        """Labels, runtime env, restart policy and the published port, per service."""
        spec = action.spec
        base = yaml.safe_load(spec.compose or "") or {}
        services: Mapping[str, Any] = base.get("services") or {}
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
        if "version" in base:
            override["version"] = base["version"]
        out: dict[str, Any] = {}
        for name, service in services.items():
            entry: dict[str, Any] = {"labels": dict(common)}
            if env:
                entry["environment"] = dict(env)
            if not (isinstance(service, dict) and "restart" in service):
                entry["restart"] = spec.resources.restart
            if name == spec.routed_service:
                entry["labels"].update(
                    {
                        key: value.replace("$", "$$")
                        for key, value in traefik_labels(
                            spec.name, spec.domains, spec.port, action.routing, spec.health_check
                        ).items()
                    }
                )
                if self.publish_host and spec.port:
                    entry["ports"] = [f"{self.publish_host}::{spec.port}"]
            for route in spec.routes:
                if route.service == name:
                    router = f"{spec.name}-{re.sub(r'[^a-z0-9-]', '-', name.lower())}"
                    labels = traefik_labels(router, route.domains, route.port, action.routing)
                    entry["labels"].update({k: v.replace("$", "$$") for k, v in labels.items()})
            out[name] = entry
        override["services"] = out
        return override

    def _compose_images(self, text: str) -> list[str]:
        data = yaml.safe_load(text) or {}
        images = []
        for service in (data.get("services") or {}).values():
            image = service.get("image") if isinstance(service, dict) else None
            if isinstance(image, str) and "@sha256:" in image:
                images.append(image)
        return images

    def run_compose(self, environment: str, files: Sequence[Path], *args: str) -> str:
        """Run compose with an argument list (never a shell); raise with its stderr tail."""
        command = [*self.compose_command, "-p", environment]
        for path in files:
            command += ["-f", str(path)]
        command += list(args)
        try:
            result = self.run(
                command,
                capture_output=True,
                text=True,
                timeout=COMPOSE_TIMEOUT,
                check=False,
                cwd=str(files[0].parent) if files else None,
                env=compose_environment(self.environ),
            )
        except subprocess.TimeoutExpired as exc:
            raise TransientAgentError(f"compose {args[0]} timed out") from exc
        except OSError as exc:
            raise PermanentAgentError(f"cannot run {command[0]}: {exc}") from exc
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

    def compose_up(self, action: ComposeUp) -> None:
        spec = action.spec
        directory = self.compose_dir(spec.name)
        main = directory / "docker-compose.yml"
        override = directory / "portside.override.yml"
        _write_private(main, action.file_text)
        _write_private(override, yaml.safe_dump(self.override_file(action), sort_keys=True))
        for image in self._compose_images(action.file_text):
            self.ensure_image(image, spec.registry)
        log.info("environment %s: compose up (deployment %s)", spec.name, spec.deployment_id)
        self.run_compose(
            spec.name,
            [main, override],
            "up",
            "-d",
            "--remove-orphans",
            "--timeout",
            str(self.stop_timeout),
        )
        self.wait_compose_healthy(spec)

    def wait_compose_healthy(self, spec: DesiredEnvironment) -> None:
        """Every service running (or finished with 0), then the routed one answering."""
        check = spec.health_check
        timeout = check.timeout if check else DEFAULT_HEALTH_TIMEOUT
        deadline = time.monotonic() + timeout
        stable_since: float | None = None
        while True:
            containers = self.project_containers(spec.name)
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
        directory = self.compose_dir(environment)
        files = [
            path
            for path in (directory / "docker-compose.yml", directory / "portside.override.yml")
            if path.exists()
        ]
        if files:
            args = ["down", "--remove-orphans", "--timeout", str(self.stop_timeout)]
            args += ["--volumes"] if remove_volumes else []
            self.run_compose(environment, files, *args)
        for container in self.project_containers(environment):
            self.remove_container(container.id, volumes=remove_volumes)
        self._remove_project_leftovers(environment, remove_volumes=remove_volumes)
        for path in files:
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()

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
    "describe",
    "detect_compose_command",
    "failure_key",
]
