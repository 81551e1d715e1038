"""Compose projects on this host: ``up``, a routed service's switch, health, ``down``.

Compose files reach compose as sealed in-memory files, never through a path a container
or another user could change; every image is pulled and inspected before anything starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from contracts.agentwire import DesiredEnvironment
from contracts.yamlsafe import dump_yaml
from hostagent import labels as lbl
from hostagent.composefile import checked_compose, compose_images, override_document
from hostagent.containers import DEFAULT_HEALTH_TIMEOUT, LOG_LINES, Containers, DeploymentFailed
from hostagent.errors import PermanentAgentError, TransientAgentError
from hostagent.files import make_dirs, open_dir, read_file, remove_file, sealed_fd, write_file
from hostagent.plan import ComposeStartRouted, ComposeUp, ComposeWaitRouted

log = logging.getLogger(__name__)

COMPOSE_TIMEOUT = 600.0
# What a compose subprocess may see of the agent's environment: never its token.
COMPOSE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR")
COMPOSE_ENV_PREFIXES = ("DOCKER_",)
COMPOSE_DIR = "compose"
COMPOSE_FILE = "docker-compose.yml"
OVERRIDE_FILE = "portside.override.yml"
# The project directory compose resolves relative paths against: empty, private, and
# holding nothing of the agent's, whatever a compose file names relative to it.
EMPTY_DIR = "empty"

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


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


def compose_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The minimal environment for compose: no agent secrets to interpolate into files."""
    return {
        key: value
        for key, value in environ.items()
        if key in COMPOSE_ENV_KEYS or key.startswith(COMPOSE_ENV_PREFIXES)
    }


@dataclass
class ComposeProjects(Containers):
    """Runs compose for the environments in compose mode; ``run`` is the subprocess."""

    compose_command_override: Sequence[str] | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    run: Runner = subprocess.run
    _compose: tuple[str, ...] | None = field(default=None, init=False, repr=False)

    @property
    def compose_command(self) -> tuple[str, ...]:
        if self._compose is None:
            self._compose = detect_compose_command(self.compose_command_override, self.run)
        return self._compose

    def compose_dir(self, environment: str) -> Path:
        return self.state_dir / COMPOSE_DIR / environment

    def override_file(
        self, action: ComposeUp | ComposeStartRouted, document: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The agent's override for ``document`` on this host (its proxy network and
        publish address): :func:`hostagent.composefile.override_document`."""
        return override_document(
            action, document, proxy_network=self.proxy_network, publish_host=self.publish_host
        )

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
        document = checked_compose(spec)
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
