"""Build, push and remove images with the Docker SDK's low-level API, streaming the output.

The low-level API is used because it yields the engine's JSON messages as they come,
so every line reaches the build log live, and errors inside the stream (which the
engine sends with a 200 status) are seen and classified here.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from buildworker.errors import (
    BuildError,
    BuildStopped,
    PermanentBuildError,
    TransientBuildError,
)
from contracts.compose_policy import is_routing_label

Log = Callable[[str], None]
# Every image a Portside build makes carries it (and so does any image built on one).
BUILD_LABEL = "io.portside.build"

# Push errors that another try cannot fix; anything else (connection refused, timeouts,
# 5xx from the registry) is treated as transient.
_PUSH_REFUSALS = (
    "unauthorized",
    "denied",
    "authentication required",
    "no basic auth credentials",  # a registry with HTTP Basic, and no credentials for it
    "name invalid",
    "name unknown",
    "manifest invalid",
    "tag invalid",
    "does not exist",
    "no such image",
    "invalid reference format",
)
# Pull errors that another try cannot fix: the image is not there, or not for anyone.
_PULL_REFUSALS = (*_PUSH_REFUSALS, "manifest unknown", "not found", "pull access denied")
# Build errors that are the engine's trouble rather than the Dockerfile's.
_BUILD_TRANSIENT = ("no space left on device", "connection reset", "i/o timeout")
_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")
_BUILT = re.compile(r"Successfully built ([0-9a-f]{12,64})")
# The classic builder's line naming the container a RUN step runs in.
_RUNNING = re.compile(r"Running in ([0-9a-f]{12,64})")
STOP_POLL_SECONDS = 0.2


def build_image(  # noqa: PLR0917 - the signature the task wrappers were promised
    client: docker.DockerClient,
    context_dir: Path,
    dockerfile: str,
    tag: str,
    labels: Mapping[str, str],
    buildargs: Mapping[str, str],
    log: Log,
    *,
    target: str | None = None,
    cache_from: Sequence[str] = (),
    untrusted: bool = False,
    stop: threading.Event | None = None,
) -> str:
    """Build ``context_dir`` as ``tag`` and return the image id (``sha256:...``).

    Nothing is pulled (``FROM`` images must be local or pullable by the engine itself as
    it sees fit); ``cache_from`` names earlier images of the branch to reuse layers from.
    An ``untrusted`` build (a fork's code) runs its steps with no network at all and
    takes no layer from the engine's cache, which holds production's layers. Once
    ``stop`` is set the build's step containers are removed, which ends the build in the
    engine, and :class:`BuildStopped` is raised.
    """
    if untrusted and cache_from:
        raise ValueError("an untrusted build takes no cache")
    if not (context_dir / dockerfile).is_file():
        raise PermanentBuildError(f"Dockerfile {dockerfile!r} not found in the build context")
    lines = _LineSplitter(log)
    image_id: str | None = None
    containers: list[str] = []  # the build's step containers, as the engine names them
    with (
        _stopped_if(stop),
        engine_errors("build", build_error, log),
        _removing_on(stop, client, containers),
    ):
        stream: Iterable[dict[str, Any]] = client.api.build(
            path=str(context_dir),
            dockerfile=dockerfile,
            tag=tag,
            labels=dict(labels),
            buildargs=dict(buildargs),
            target=target,
            cache_from=list(cache_from) or None,
            nocache=untrusted,
            network_mode="none" if untrusted else None,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for message in stream:
            if stop is not None and stop.is_set():
                break
            _raise_on_error(message, lines, build_error)
            if "stream" in message:
                lines.feed(str(message["stream"]))
                if found := _RUNNING.search(str(message["stream"])):
                    containers.append(found.group(1))
                if found := _BUILT.search(str(message["stream"])):
                    image_id = image_id or found.group(1)
            elif isinstance(message.get("aux"), dict) and "ID" in message["aux"]:
                image_id = str(message["aux"]["ID"])
            else:
                _log_status(message, lines)
        lines.flush()
        if stop is not None and stop.is_set():
            raise BuildStopped("the build was stopped")
        if image_id is None or not image_id.startswith("sha256:"):
            image_id = str(client.api.inspect_image(tag)["Id"])
    return image_id


@contextmanager
def _stopped_if(stop: threading.Event | None) -> Iterator[None]:
    """Whatever a stopped build ended with (the engine's error for a removed step
    container, most likely) is its being stopped."""
    try:
        yield
    except BuildError:
        if stop is not None and stop.is_set():
            raise BuildStopped("the build was stopped") from None
        raise


@contextmanager
def _removing_on(
    stop: threading.Event | None, client: docker.DockerClient, containers: list[str]
) -> Iterator[None]:
    """While the block runs, remove every container of ``containers`` (the build's step
    containers, appended as they start) once ``stop`` is set: the engine then ends the
    build at that step rather than running it to the end. From a thread, because the
    build's stream is silent while a step runs.

    "Running in <id>" is also text a step can print: a container that was there before
    the build, or that the agent or compose runs (routing labels), is never removed."""
    if stop is None:
        yield
        return
    before: set[str] = set()  # an engine that cannot list cannot remove either
    with contextlib.suppress(docker.errors.APIError, requests.RequestException):
        before = {str(c["Id"]) for c in client.api.containers(all=True)}
    done = threading.Event()
    removed: set[str] = set()

    def step_container(container: str) -> bool:
        try:
            found = client.api.inspect_container(container)
        except (docker.errors.APIError, requests.RequestException):
            return False
        labels = (found.get("Config") or {}).get("Labels") or {}
        routed = any(key != BUILD_LABEL and is_routing_label(key) for key in labels)
        return found.get("Id") not in before and not routed

    def remove_started() -> None:
        for container in [c for c in containers if c not in removed]:
            removed.add(container)
            if not step_container(container):
                continue
            with contextlib.suppress(docker.errors.APIError, requests.RequestException):
                client.api.remove_container(container, force=True)

    def watch() -> None:
        while not done.is_set():
            if stop.wait(STOP_POLL_SECONDS):
                remove_started()
                done.wait(STOP_POLL_SECONDS)
        if stop.is_set():  # the build ended as it was stopped: nothing of it stays
            remove_started()

    watcher = threading.Thread(target=watch, name="build-stop", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(timeout=10)


def push_image(
    client: docker.DockerClient,
    repository: str,
    tag: str,
    auth: dict[str, str] | None,
    log: Log,
) -> str:
    """Push ``repository:tag`` and return the manifest digest the registry gave it.

    ``auth`` (``username``/``password``) is sent to the engine for this push only; None
    uses the engine host's own configuration.
    """
    lines = _LineSplitter(log)
    digest: str | None = None
    classify = _push_error(repository)
    with engine_errors("push", classify, log):
        stream: Iterable[dict[str, Any]] = client.api.push(
            repository, tag=tag, stream=True, decode=True, auth_config=auth
        )
        for message in stream:
            _raise_on_error(message, lines, classify)
            aux = message.get("aux")
            if isinstance(aux, dict) and str(aux.get("Digest", "")).startswith("sha256:"):
                digest = str(aux["Digest"])
            elif found := _DIGEST.search(str(message.get("status", ""))):
                digest = digest or found.group(1)
            _log_status(message, lines)
        lines.flush()
    if digest is None:
        raise TransientBuildError(f"the push of {repository}:{tag} reported no digest")
    return digest


def remove_image(client: docker.DockerClient, image: str, *, force: bool = False) -> bool:
    """Remove an image (id or tag); False if it was already gone."""
    with engine_errors("remove image", _removal_error):
        try:
            client.api.remove_image(image, force=force)
        except docker.errors.ImageNotFound:
            return False
    return True


class _LineSplitter:
    """The engine splits output at arbitrary points; the log wants whole lines."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self._partial = ""

    def feed(self, text: str) -> None:
        *complete, self._partial = (self._partial + text).split("\n")
        for line in complete:
            self._log(line.rstrip("\r"))

    def flush(self) -> None:
        if self._partial:
            self._log(self._partial.rstrip("\r"))
            self._partial = ""


def _log_status(message: dict[str, Any], lines: _LineSplitter) -> None:
    """Log a status message once per state, not every progress-bar tick."""
    status = message.get("status")
    if not status or (message.get("progressDetail") or {}).get("current") is not None:
        return
    layer = message.get("id")
    lines.feed(f"{layer}: {status}\n" if layer else f"{status}\n")


def _raise_on_error(
    message: dict[str, Any], lines: _LineSplitter, classify: Callable[[str], BuildError]
) -> None:
    if "errorDetail" in message or "error" in message:
        lines.flush()
        detail = message.get("errorDetail") or {}
        text = str(detail.get("message") or message.get("error") or "unknown error").strip()
        lines.feed(f"ERROR: {text}\n")
        raise classify(text)


def build_error(text: str) -> BuildError:
    if any(marker in text.lower() for marker in _BUILD_TRANSIENT):
        return TransientBuildError(f"build failed on the worker: {text}")
    return PermanentBuildError(f"build failed: {text}")


def _removal_error(text: str) -> BuildError:
    return PermanentBuildError(f"cannot remove image: {text}")


def _push_error(repository: str) -> Callable[[str], BuildError]:
    """Classify a push error, naming the registry: the engine's text often does not."""
    registry = repository.split("/", 1)[0]

    def classify(text: str) -> BuildError:
        if any(marker in text.lower() for marker in _PUSH_REFUSALS):
            return PermanentBuildError(f"registry {registry} refused the push: {text}")
        return TransientBuildError(f"push to registry {registry} failed: {text}")

    return classify


@contextmanager
def engine_errors(
    what: str, classify: Callable[[str], BuildError], log: Log | None = None
) -> Iterator[None]:
    """Map the SDK's exceptions: an unreachable engine is transient, its answers classified."""
    try:
        yield
    except BuildError:
        raise
    except docker.errors.APIError as exc:  # before RequestException: it is an HTTPError
        text = str(exc.explanation or exc)
        if log is not None:
            log(f"ERROR: {text}")
        raise classify(text) from exc
    except requests.exceptions.RequestException as exc:
        raise TransientBuildError(f"Docker engine unreachable during {what}: {exc}") from exc
    except docker.errors.DockerException as exc:
        raise PermanentBuildError(f"{what} failed: {exc}") from exc


def built_by_portside(client: docker.DockerClient, reference: str) -> bool:
    """True when ``reference`` names a local image a Portside build made (by its label,
    whatever name it goes by on this engine)."""
    with engine_errors("inspect image", build_error):
        try:
            config = client.api.inspect_image(reference).get("Config") or {}
        except docker.errors.NotFound:
            return False
    return BUILD_LABEL in (config.get("Labels") or {})


def routing_labels(client: docker.DockerClient, image: str) -> list[str]:
    """The labels of ``image`` that only Portside's agent may set (Traefik's, Portside's,
    compose's), its own build label aside: Docker copies an image's labels onto every
    container run from it, where Traefik reads them, so a ``LABEL`` in a Dockerfile (or
    its base image's) could route a domain to that container."""
    with engine_errors("inspect image", build_error):
        config = client.api.inspect_image(image).get("Config") or {}
    labels = config.get("Labels") or {}
    return sorted(key for key in labels if key != BUILD_LABEL and is_routing_label(key))


def is_present(client: docker.DockerClient, reference: str) -> bool:
    """Whether the engine has the image ``reference`` names."""
    with engine_errors("inspect image", build_error):
        try:
            client.api.inspect_image(reference)
        except docker.errors.NotFound:
            return False
    return True


def pull_if_absent(client: docker.DockerClient, reference: str, log: Log) -> None:
    """Pull ``reference`` unless the engine has it, with no credentials: the base images
    of a fork's build must be public, and must be local to be inspected before the build
    (which would otherwise pull them itself, and run their ONBUILD triggers)."""
    if not is_present(client, reference):
        pull(client, reference, log)


def pull(
    client: docker.DockerClient,
    reference: str,
    log: Log,
    *,
    auth: Mapping[str, str] | None = None,
) -> None:
    """Pull ``reference`` with ``auth``, or with no credentials at all: never the engine
    host's own, which a fork's build must not use."""
    lines = _LineSplitter(log)
    classify = _pull_error(reference)
    log(f"pulling {reference}")
    with engine_errors("pull", classify, log):
        stream: Iterable[dict[str, Any]] = client.api.pull(
            reference, stream=True, decode=True, auth_config=dict(auth or {})
        )
        for message in stream:
            _raise_on_error(message, lines, classify)
            _log_status(message, lines)
        lines.flush()


def onbuild_triggers(client: docker.DockerClient, reference: str) -> list[str]:
    """The ``ONBUILD`` instructions of the local image ``reference``: a build ``FROM`` it
    runs them as if the Dockerfile held them, unseen by the checks of its text."""
    with engine_errors("inspect image", build_error):
        config = client.api.inspect_image(reference).get("Config") or {}
    return [str(trigger) for trigger in config.get("OnBuild") or []]


def _pull_error(reference: str) -> Callable[[str], BuildError]:
    def classify(text: str) -> BuildError:
        if any(marker in text.lower() for marker in _PULL_REFUSALS):
            return PermanentBuildError(f"cannot pull {reference}: {text}")
        return TransientBuildError(f"pull of {reference} failed: {text}")

    return classify
