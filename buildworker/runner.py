"""One build step at a time, on one node: the build worker's part of the pipeline.

The Celery task wrappers call :meth:`StepRunner.run` with a build id, its attempt, a
step name and what the step before handed over (:mod:`buildworker.handoff`). The first
step claims itself from the control plane (which refuses a step that is done, cancelled
or taken over); every step ends in one exchange that reports it and claims the next, and
hands that claim and what it found to the next step. Clone, build and push share a
workspace and the local images, which is why they run on the same node.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from buildworker import cache, compose, git, images
from buildworker.api import ControlPlane, StepRefused
from buildworker.errors import BuildError, BuildStopped, PermanentBuildError
from buildworker.handoff import Claim, Handoff, State
from buildworker.imagebuild import ImageBuilder
from buildworker.steplog import BuildLog, LogSink, Stop, StopProbe, Watch, never_stopped
from contracts.environ import UntrustedMode
from contracts.gitremote import GitAuth
from contracts.steps import LAST_STEP, Step

log = logging.getLogger(__name__)

_TAKES = {"no": "trusted builds only", "only": "untrusted builds only", "yes": "both"}


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    node: str
    registry: str
    workspace_root: Path
    untrusted: UntrustedMode = "no"
    # PORTSIDE_BUILD_CACHE_MAX: bytes of images and build cache kept; None: never pruned.
    cache_max: int | None = None

    def takes(self, untrusted: bool) -> bool:
        """Whether this worker may run a build of that kind: a worker for forks' code
        holds no production work, and one for production runs no fork's code."""
        return self.untrusted == "yes" or (self.untrusted == "only") == untrusted


class WrongWorker(PermanentBuildError):
    """The step is for another kind of worker (a misrouted message); nothing was done."""


class StepRunner:
    """Runs pipeline steps for builds on this node."""

    def __init__(
        self,
        api: ControlPlane,
        docker_client: docker.DockerClient,
        config: WorkerConfig,
        sink: LogSink,
        stop_reason: StopProbe = never_stopped,
    ) -> None:
        self.api = api
        self.docker = docker_client
        self.config = config
        self.sink = sink
        self.stop_reason = stop_reason
        self.builder = ImageBuilder(docker_client, config.registry, config.workspace_root)
        # Images the cache budget removed and removals refused, since the worker started.
        self.cache_removed = 0
        self.cache_failed = 0

    def workspace(self, build_id: int, attempt: int) -> Path:
        return cache.workspace(self.config.workspace_root, build_id, attempt)

    def run(
        self,
        step: str,
        build_id: int,
        attempt: int,
        *,
        untrusted: bool = False,
        handoff: Handoff | None = None,
    ) -> Handoff | None:
        """Run one step and report it, claiming the next in the same exchange; return what
        the next step needs (None after the last). Transient errors propagate for a retry.

        ``untrusted`` is what the message says; a step this worker must not take is
        refused before the claim. The claim's own word decides after it: a message that
        said otherwise leaves the step unreported, and the build is taken over and sent
        to the right queue. ``handoff`` is what the step before handed over: its claim
        of this step (none: the step claims itself) and the state it found.
        """
        try:
            current = Step(step)
        except ValueError:
            raise PermanentBuildError(f"unknown step {step!r}") from None
        if not self.config.takes(untrusted):
            raise WrongWorker(self._wrong_worker(build_id, untrusted))
        handoff = handoff or Handoff()
        spec = handoff.claim if handoff.claim and handoff.claim.get("step") == step else None
        spec = spec or self._claim(current, build_id, attempt)
        secrets = [
            *spec.get("build_args", {}).values(),
            *(spec.get("registry_auth") or {}).values(),
        ]
        build_log = BuildLog(self.sink, build_id, secrets)
        if not self.config.takes(bool(spec.get("untrusted"))):
            message = self._wrong_worker(build_id, bool(spec.get("untrusted")))
            build_log(f"refused by {self.config.node}: {message}")
            raise WrongWorker(message)
        build_log(f"==> {step} ({self.config.node})")
        state: State = {"images": {}, **handoff.state}
        stop = Stop()
        try:
            with Watch(self.api, build_id, attempt, self.stop_reason, stop):
                artifacts = self._work(current, spec, state, build_log, stop)
        except BuildError as exc:
            if stop.is_set():
                raise self._stopped(build_id, attempt, stop.reason, build_log) from None
            if isinstance(exc, StepRefused) or not isinstance(exc, PermanentBuildError):
                raise
            message = build_log.mask(str(exc))
            build_log(f"error: {message}")
            self.api.finish(build_id, step, attempt, error=message)
            self.cleanup(build_id, attempt)
            raise
        if stop.is_set():
            raise self._stopped(build_id, attempt, stop.reason, build_log)
        answer = self._finish(current, build_id, attempt, artifacts)
        if current is LAST_STEP:
            _log_deployment(answer.get("deployment"), build_log)
            self.cleanup(build_id, attempt)
            return None
        return Handoff(state, answer.get("next"))

    def _claim(self, step: Step, build_id: int, attempt: int) -> Claim:
        try:
            return self.api.claim(build_id, step, attempt, self.config.node)
        except StepRefused:
            if self.stop_reason(build_id, attempt):  # stopped between two steps: nothing is left
                self.cleanup(build_id, attempt)
            raise

    def _finish(
        self, step: Step, build_id: int, attempt: int, artifacts: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Report the step done and claim the next; a refusal (the build was cancelled or
        taken over as the step ended, or its artifacts refused: the build failed there)
        leaves nothing for this node to keep."""
        try:
            return self.api.finish(
                build_id, step, attempt, worker=self.config.node, artifacts=artifacts
            )
        except PermanentBuildError:
            self.cleanup(build_id, attempt)
            raise

    def _work(
        self, step: Step, spec: Claim, state: State, build_log: BuildLog, stop: Stop
    ) -> dict[str, Any] | None:
        """The step's own work on this node; upload_compose's result goes with its finish,
        and record_deployment's work is its finish (the control plane deploys the build)."""
        if step is Step.CLONE:
            self._clone(spec, build_log)
        elif step is Step.BUILD:
            self.builder.build(spec, state, build_log, stop)
        elif step is Step.PUSH:
            self._push(spec, state, build_log)
        elif step is Step.UPLOAD_COMPOSE:
            return self._artifacts(state, build_log)
        return None

    def _stopped(
        self, build_id: int, attempt: int, reason: str, build_log: BuildLog
    ) -> BuildStopped:
        """The control plane stopped the build (it is cancelled there already): nothing
        to report, only the workspace to remove."""
        build_log(f"stopped on {self.config.node}: {build_log.mask(reason)}")
        self.cleanup(build_id, attempt)
        return BuildStopped(f"build {build_id} was stopped: {reason}")

    def _wrong_worker(self, build_id: int, untrusted: bool) -> str:
        kind = "an untrusted (fork's)" if untrusted else "a trusted"
        takes = _TAKES[self.config.untrusted]
        return f"build {build_id} is {kind} build; worker {self.config.node} takes {takes}"

    def give_up(self, step: str, build_id: int, attempt: int, error: str) -> None:
        """Fail a step whose transient error outlasted its retries."""
        BuildLog(self.sink, build_id)(f"error: {step} gave up: {error}")
        self.api.finish(build_id, step, attempt, error=f"{step} gave up after retries: {error}")
        self.cleanup(build_id, attempt)

    def cleanup(self, build_id: int, attempt: int) -> None:
        """The build is over on this node: its workspace goes, and the images and build
        cache are cut down to the budget."""
        shutil.rmtree(self.workspace(build_id, attempt), ignore_errors=True)
        self.prune_cache()

    def prune_cache(self) -> None:
        """Keep the worker's images and build cache under ``cache_max`` (buildworker.cache);
        a failure is logged, never the build's."""
        if self.config.cache_max is None:
            return
        try:
            result = cache.prune(
                self.docker, self.config.registry, self.config.cache_max, self.config.workspace_root
            )
        except (docker.errors.DockerException, requests.RequestException) as exc:
            log.warning("build cache: prune failed: %s", exc)
            return
        self.cache_removed += len(result.removed)
        self.cache_failed += len(result.failed)
        if result.removed or result.failed or result.build_cache_reclaimed:
            log.info(
                "build cache pruned: usage=%d budget=%d before=%d removed=%d failed=%d "
                "builder_reclaimed=%d removed_total=%d failed_total=%d images=%s",
                result.usage_after,
                self.config.cache_max,
                result.usage_before,
                len(result.removed),
                len(result.failed),
                result.build_cache_reclaimed,
                self.cache_removed,
                self.cache_failed,
                ",".join(result.removed),
            )
        elif result.usage_after > self.config.cache_max:
            log.warning(
                "build cache over budget: usage=%d budget=%d (what is left is in use)",
                result.usage_after,
                self.config.cache_max,
            )

    def _clone(self, spec: Claim, build_log: BuildLog) -> None:
        if not spec.get("clone_url"):
            raise PermanentBuildError(
                f"repository {spec['repository']} is not installed: no clone URL known"
            )
        workspace = self.workspace(spec["build_id"], spec["attempt"])
        workspace.mkdir(parents=True, exist_ok=True)

        def fetch(token: str | None, remote: GitAuth | None = None) -> None:
            git.fetch_commit(
                spec["clone_url"],
                spec["commit_sha"],
                token,
                workspace / "src",
                log=build_log,
                remote=remote,
            )

        if spec.get("git_remote"):
            remote = self.api.git_remote_auth(spec["build_id"])
            build_log.hide(*remote.secrets())
            fetch(None, remote)
            return
        token = self.api.git_token(spec["build_id"])
        build_log.hide(token)
        try:
            fetch(token)
        except git.AuthenticationFailed:
            token = self.api.git_token(spec["build_id"], refresh=True)
            build_log.hide(token)
            build_log("the installation token was refused; fetching again with a fresh one")
            fetch(token)

    def _push(self, spec: Claim, state: State, build_log: BuildLog) -> None:
        auth = spec.get("registry_auth")
        if not state["images"]:
            raise PermanentBuildError(
                f"the build step's images of build {spec['build_id']} are unknown here"
            )
        for key, image in state["images"].items():
            build_log(f"pushing {image['repository']}:{image['tag']}")
            image["digest"] = images.push_image(
                self.docker, image["repository"], image["tag"], auth=auth, log=build_log
            )
            if image["branch_tag"]:
                images.push_image(
                    self.docker, image["repository"], image["branch_tag"], auth=auth, log=build_log
                )
            build_log(f"{key}: {image['repository']}@{image['digest']}")

    @staticmethod
    def _artifacts(state: State, build_log: BuildLog) -> dict[str, Any]:
        """The pushed images by digest, and the compose file pinned to them."""
        pinned = None
        if state.get("compose"):
            pinned = compose.pin_images(
                state["compose"],
                {
                    key: f"{image['repository']}@{image['digest']}"
                    for key, image in _built(state).items()
                },
            )
            build_log("compose file pinned to the pushed digests")
        return {
            "images": {
                key: {"repository": i["repository"], "tag": i["tag"], "digest": i["digest"]}
                for key, i in _built(state).items()
            },
            "compose": pinned,
            "routed_service": state.get("routed_service"),
        }


def _built(state: State) -> dict[str, Any]:
    """The images the build step made; none means this step has no hand-off to go on (a
    message from before the worker carried it), and the build cannot go on."""
    if not state["images"]:
        raise PermanentBuildError(
            "no images of this build are known here: its build step left none"
        )
    built: dict[str, Any] = state["images"]
    return built


def _log_deployment(deployment: dict[str, Any] | None, build_log: BuildLog) -> None:
    if deployment is None:
        build_log("built; its deployment was recorded before")
    elif deployment["id"] is None:  # held at a gate: the control plane deploys it later
        build_log(f"built; not deployed yet ({deployment['status']}): {deployment['error']}")
    else:
        build_log(f"deployment {deployment['id']} recorded ({deployment['status']})")
