"""One build step at a time, on one node: the build worker's part of the pipeline.

The Celery task wrappers call :meth:`StepRunner.run` with a build id, its attempt and a
step name. Each step claims itself from the control plane (which refuses a step that is
done, cancelled or taken over), does its work, and reports back. Clone, build and push
share a workspace and the local images, which is why they run on the same node; what one
step leaves for the next is kept in the workspace's ``state.json``.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from buildworker import cache, compose, dockerfile, git, images, names
from buildworker.api import ControlPlane, StepRefused
from buildworker.errors import BuildError, BuildStopped, PermanentBuildError
from contracts.environ import UntrustedMode

log = logging.getLogger(__name__)

STEPS = ("clone", "build", "push", "upload_compose", "record_deployment")
HEARTBEAT_SECONDS = 10.0
STOP_POLL_SECONDS = 1.0
LogSink = Callable[[int, list[str]], None]
# Why the control plane stopped a build's attempt (its Redis stop key), or None.
StopProbe = Callable[[int, int], str | None]
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


class BuildLog:
    """Forwards a build's log lines to the sink with every known secret replaced by ***."""

    def __init__(self, sink: LogSink, build_id: int, secrets: Iterable[str] = ()) -> None:
        self._sink = sink
        self._build_id = build_id
        self._secrets: set[str] = set()
        self.hide(*secrets)

    def hide(self, *secrets: str | None) -> None:
        self._secrets.update(s for s in secrets if s and len(s) >= 4)

    def mask(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def __call__(self, text: str) -> None:
        lines = [self.mask(line) for line in text.rstrip("\n").split("\n")]
        self._sink(self._build_id, lines)


class _Stop(threading.Event):
    """Set, with why, when the control plane stops the build the step belongs to."""

    reason = ""

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.set()


class _Watch:
    """While a step runs: tells the control plane it is alive (so a dead worker's build
    is taken over), and watches for the word to stop it, read from ``stop_reason`` every
    :data:`STOP_POLL_SECONDS` or given as a 409 answer to a heartbeat."""

    def __init__(
        self, api: ControlPlane, build_id: int, attempt: int, stop_reason: StopProbe, stop: _Stop
    ) -> None:
        self._api = api
        self._build_id = build_id
        self._attempt = attempt
        self._stop_reason = stop_reason
        self._stop = stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        beat_at = time.monotonic() + HEARTBEAT_SECONDS
        while not self._done.wait(STOP_POLL_SECONDS):
            if reason := self._stop_reason(self._build_id, self._attempt):
                self._stop.stop(reason)
            if time.monotonic() >= beat_at:
                beat_at = time.monotonic() + HEARTBEAT_SECONDS
                self._beat()

    def _beat(self) -> None:
        try:
            self._api.heartbeat(self._build_id, self._attempt)
        except StepRefused as exc:
            self._stop.stop(str(exc))
        except Exception as exc:
            log.warning("heartbeat of build %s failed: %s", self._build_id, exc)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=1)


def never_stopped(_build_id: int, _attempt: int) -> None:
    """The stop probe of a runner nobody stops (tests, a worker without Redis)."""


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
        # Images the cache budget removed and removals refused, since the worker started.
        self.cache_removed = 0
        self.cache_failed = 0

    def workspace(self, build_id: int, attempt: int) -> Path:
        return self.config.workspace_root / f"build-{build_id}-{attempt}"

    def run(self, step: str, build_id: int, attempt: int, *, untrusted: bool = False) -> None:
        """Claim, run and report one step; transient errors propagate for a retry.

        ``untrusted`` is what the message says; a step this worker must not take is
        refused before the claim. The claim's own word decides after it: a message that
        said otherwise leaves the step unreported, and the build is taken over and sent
        to the right queue.
        """
        if step not in STEPS:
            raise PermanentBuildError(f"unknown step {step!r}")
        if not self.config.takes(untrusted):
            raise WrongWorker(self._wrong_worker(build_id, untrusted))
        try:
            spec = self.api.claim(build_id, step, attempt, self.config.node)
        except StepRefused:
            if self.stop_reason(build_id, attempt):  # stopped between two steps: nothing is left
                self.cleanup(build_id, attempt)
            raise
        build_log = BuildLog(self.sink, build_id, spec.get("build_args", {}).values())
        if not self.config.takes(bool(spec.get("untrusted"))):
            message = self._wrong_worker(build_id, bool(spec.get("untrusted")))
            build_log(f"refused by {self.config.node}: {message}")
            raise WrongWorker(message)
        build_log(f"==> {step} ({self.config.node})")
        stop = _Stop()
        work = (
            functools.partial(self._build, stop=stop)
            if step == "build"
            else getattr(self, f"_{step}")
        )
        try:
            with _Watch(self.api, build_id, attempt, self.stop_reason, stop):
                work(spec, build_log)
        except BuildError as exc:
            if stop.is_set():
                raise self._stopped(build_id, attempt, stop.reason, build_log) from None
            if not isinstance(exc, PermanentBuildError):
                raise
            message = build_log.mask(str(exc))
            build_log(f"error: {message}")
            self.api.finish(build_id, step, attempt, error=message)
            self.cleanup(build_id, attempt)
            raise
        if stop.is_set():
            raise self._stopped(build_id, attempt, stop.reason, build_log)
        self.api.finish(build_id, step, attempt)
        if step == STEPS[-1]:
            self.cleanup(build_id, attempt)

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

    # -- state handed from one step to the next on this node --------------------------

    def _state_path(self, spec: dict[str, Any]) -> Path:
        return self.workspace(spec["build_id"], spec["attempt"]) / "state.json"

    def _load_state(self, spec: dict[str, Any]) -> dict[str, Any]:
        path = self._state_path(spec)
        if not path.is_file():
            raise PermanentBuildError(
                f"the workspace of build {spec['build_id']} is gone from {self.config.node}"
            )
        state: dict[str, Any] = json.loads(path.read_text())
        return state

    def _save_state(self, spec: dict[str, Any], state: dict[str, Any]) -> None:
        path = self._state_path(spec)
        path.write_text(json.dumps(state))

    def _checkout(self, spec: dict[str, Any]) -> Path:
        return self.workspace(spec["build_id"], spec["attempt"]) / "src"

    # -- the steps --------------------------------------------------------------------

    def _clone(self, spec: dict[str, Any], build_log: BuildLog) -> None:
        if not spec.get("clone_url"):
            raise PermanentBuildError(
                f"repository {spec['repository']} is not installed: no clone URL known"
            )
        workspace = self.workspace(spec["build_id"], spec["attempt"])
        workspace.mkdir(parents=True, exist_ok=True)
        if spec.get("git_remote"):
            remote = self.api.git_remote_auth(spec["build_id"])
            for secret in remote.secrets():
                build_log.hide(secret)
            git.fetch_commit(
                spec["clone_url"],
                spec["commit_sha"],
                None,
                self._checkout(spec),
                log=build_log,
                remote=remote,
            )
            self._save_state(spec, {"images": {}})
            return
        token = self.api.git_token(spec["build_id"])
        build_log.hide(token)
        try:
            git.fetch_commit(
                spec["clone_url"], spec["commit_sha"], token, self._checkout(spec), log=build_log
            )
        except git.AuthenticationFailed:
            token = self.api.git_token(spec["build_id"], refresh=True)
            build_log.hide(token)
            build_log("the installation token was refused; fetching again with a fresh one")
            git.fetch_commit(
                spec["clone_url"], spec["commit_sha"], token, self._checkout(spec), log=build_log
            )
        self._save_state(spec, {"images": {}})

    def _build(
        self, spec: dict[str, Any], build_log: BuildLog, stop: threading.Event | None = None
    ) -> None:
        state = self._load_state(spec)
        checkout = self._checkout(spec)
        plan = compose.plan_builds(
            checkout,
            spec.get("compose_path"),
            extra_allowed=frozenset(spec.get("compose_allow", [])),
        )
        tag = names.short_sha(spec["commit_sha"])
        untrusted = bool(spec.get("untrusted"))
        # A fork's images are never tagged by branch: its branch may well be called main.
        branch_tag = None if untrusted else names.branch_tag(spec["branch"])
        built: dict[str, Any] = {}
        for item in plan.builds:
            repository = self._repository(spec, item.service)
            key = item.service or "app"
            buildargs = {**item.args, **spec.get("build_args", {})}
            if untrusted:
                self._check_bases(item, buildargs, build_log)
            cache_from = (
                self._cache_images(
                    spec,
                    [f"{repository}:{branch_tag}", *spec.get("cache_from", {}).get(key, [])],
                    state,
                    build_log,
                )
                if branch_tag
                else []
            )
            build_log(f"building {key} as {repository}:{tag}")
            image_id = images.build_image(
                self.docker,
                context_dir=item.context,
                dockerfile=item.dockerfile,
                tag=f"{repository}:{tag}",
                # One label: the classic builder adds a layer per label, and the build
                # row already knows the service and the commit.
                labels={"io.portside.build": str(spec["build_id"])},
                buildargs=buildargs,
                target=item.target,
                cache_from=cache_from,
                untrusted=untrusted,
                log=build_log,
                stop=stop,
            )
            self._check_labels(key, image_id)
            # The service's build variables may be secret; the compose file's are not.
            if images.scrub_build_args(
                self.docker, f"{repository}:{tag}", spec.get("build_args", {})
            ):
                build_log("build variables taken out of the image history")
            if branch_tag:
                self.docker.images.get(f"{repository}:{tag}").tag(repository, branch_tag)
            built[key] = {"repository": repository, "tag": tag, "branch_tag": branch_tag}
        state["images"] = built
        state["compose"] = plan.compose.text if plan.compose else None
        state["routed_service"] = plan.compose.routed_service if plan.compose else None
        self._save_state(spec, state)

    def _cache_images(
        self,
        spec: dict[str, Any],
        references: list[str],
        state: dict[str, Any],
        build_log: BuildLog,
    ) -> list[str]:
        """Those of ``references`` (the branch's last image, then those the control plane
        named: production's) that are here, pulled first when absent; one that cannot be
        pulled (a new branch has no image yet) is left out. They are noted in the state
        first, so that the cache budget leaves them alone while the build runs."""
        state["cache_from"] = [*state.get("cache_from", []), *references]
        self._save_state(spec, state)
        present = []

        def progress(line: str) -> None:
            """The pull's lines but its error, which is said once below (a new branch
            has no image yet: nothing for the build log to call an error)."""
            if not line.startswith("ERROR: "):
                build_log(line)

        for reference in references:
            try:
                if not images.is_present(self.docker, reference):
                    auth = self._registry_auth(spec, build_log)
                    images.pull(self.docker, reference, progress, auth=auth)
            except StepRefused:
                raise
            except BuildError as exc:
                build_log(f"no build cache from {reference}: {build_log.mask(str(exc))}")
                continue
            present.append(reference)
        return present

    def _registry_auth(self, spec: dict[str, Any], build_log: BuildLog) -> dict[str, str] | None:
        """The push credentials of the build's registry (None: the engine host's own),
        asked of the control plane once per step."""
        if "registry_auth" not in spec:
            credentials = self.api.registry_credentials(spec["build_id"])
            build_log.hide(credentials.get("password"))
            spec["registry_auth"] = (
                {"username": credentials["username"], "password": credentials["password"]}
                if credentials.get("username")
                else None
            )
        auth: dict[str, str] | None = spec["registry_auth"]
        return auth

    def _repository(self, spec: dict[str, Any], service: str | None) -> str:
        """Where an image goes: a fork's under its pull request's name of its own."""
        if not spec.get("untrusted"):
            return names.image_repository(self.config.registry, spec["repository"], service)
        if not spec.get("pr_number"):
            raise PermanentBuildError("an untrusted build needs its pull request's number")
        return names.pull_request_repository(
            self.config.registry, spec["repository"], int(spec["pr_number"]), service
        )

    def _check_labels(self, key: str, image_id: str) -> None:
        """Refuse (and remove) an image carrying a label only the agent may set, such as a
        Traefik router: containers inherit their image's labels, whoever built it."""
        labels = images.routing_labels(self.docker, image_id)
        if labels:
            images.remove_image(self.docker, image_id, force=True)
            shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
            raise PermanentBuildError(
                f"the image of {key} carries labels only Portside may set: {shown} "
                "(from a LABEL of its Dockerfile or of its base image)"
            )

    def _check_bases(
        self, item: compose.BuildSpec, buildargs: dict[str, str], build_log: BuildLog
    ) -> None:
        """Refuse a fork's Dockerfile that builds on or copies from an image of the
        Portside registry or any image a Portside build made on this engine, or builds on
        an image with ONBUILD triggers (run by the build, never seen in the Dockerfile).
        The base images are pulled first when absent, so that they can be inspected."""
        text = dockerfile.read(item.context, item.dockerfile)
        references = dockerfile.image_references(text, buildargs)
        reason = (
            "is an image of Portside's registry or built by Portside; a fork's build may "
            "use only public base images"
        )
        # Never pulled: a name of Portside's registry, or an id of a local image.
        portside = dockerfile.portside_references(references, self.config.registry)
        self._refuse(item, portside, reason, build_log)
        bases = [ref for ref in references if ref.instruction == "FROM"]
        for ref in bases:
            images.pull_if_absent(self.docker, ref.reference, build_log)
        self._refuse(
            item,
            [ref for ref in references if images.built_by_portside(self.docker, ref.reference)],
            reason,
            build_log,
        )
        self._refuse(
            item,
            [ref for ref in bases if images.onbuild_triggers(self.docker, ref.reference)],
            "has ONBUILD instructions, which a fork's build may not run",
            build_log,
        )

    @staticmethod
    def _refuse(
        item: compose.BuildSpec,
        refused: list[dockerfile.ImageReference],
        reason: str,
        build_log: BuildLog,
    ) -> None:
        """Log every one of ``refused`` and raise for the first."""
        named = [
            f"{item.dockerfile} line {ref.line}: {ref.instruction} {ref.reference}"
            for ref in refused
        ]
        for line in named:
            build_log(line)
        if named:
            raise PermanentBuildError(f"{named[0]} {reason}")

    def _push(self, spec: dict[str, Any], build_log: BuildLog) -> None:
        state = self._load_state(spec)
        auth = self._registry_auth(spec, build_log)
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
        self._save_state(spec, state)

    def _upload_compose(self, spec: dict[str, Any], build_log: BuildLog) -> None:
        state = self._load_state(spec)
        pinned = None
        if state.get("compose"):
            pinned = compose.pin_images(
                state["compose"],
                {
                    key: f"{image['repository']}@{image['digest']}"
                    for key, image in state["images"].items()
                },
            )
            build_log("compose file pinned to the pushed digests")
        artifacts = {
            key: {"repository": i["repository"], "tag": i["tag"], "digest": i["digest"]}
            for key, i in state["images"].items()
        }
        self.api.upload_artifacts(
            spec["build_id"], spec["attempt"], artifacts, pinned, state.get("routed_service")
        )

    def _record_deployment(self, spec: dict[str, Any], build_log: BuildLog) -> None:
        deployment = self.api.record_deployment(spec["service_id"], spec["build_id"])
        if deployment["id"] is None:  # held at a gate: the control plane deploys it later
            build_log(f"built; not deployed yet ({deployment['status']}): {deployment['error']}")
        else:
            build_log(f"deployment {deployment['id']} recorded ({deployment['status']})")
