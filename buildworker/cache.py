"""The build worker's disk budget: its images and the builder's cache stay under
``PORTSIDE_BUILD_CACHE_MAX``, the oldest going first.

The worker's images are those a Portside build made (the :data:`~buildworker.images.BUILD_LABEL`
label, which images pulled as build cache carry too) named under the worker's registry;
an operator's own images and base images never are. An image a container uses (running
or stopped) is never removed, nor one a build still running on this worker made or took
as cache (its workspace still exists, and its ``cache_from.json`` names the cache it
pulled).
Removing an image of the classic builder also removes its untagged parents, which are
that builder's cache; BuildKit's cache (``docker builder prune``), if anything on the
engine uses BuildKit, is cut down to what the images leave of the budget.

The size counted for the images is the sum of each one's whole size: layers they share
are counted once per image, so the disk they hold is at most the budget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from buildworker.images import BUILD_LABEL

log = logging.getLogger(__name__)

_WORKSPACE = re.compile(r"build-([0-9]+)-[0-9]+")
_CACHE_NOTE = "cache_from.json"


def workspace(root: Path, build_id: int, attempt: int) -> Path:
    """Where one build attempt's steps keep its checkout on this node."""
    return root / f"build-{build_id}-{attempt}"


def note_cache_from(workspace: Path, references: Iterable[str]) -> None:
    """Keep the images a running build takes as cache out of reach of the budget."""
    note = workspace / _CACHE_NOTE
    with contextlib.suppress(OSError, ValueError):
        references = [*json.loads(note.read_text()), *references]
    note.write_text(json.dumps(list(references)))


@dataclass
class PruneResult:
    """What one pass found and did, for the log and the counters."""

    usage_before: int
    usage_after: int
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    build_cache_reclaimed: int = 0


@dataclass(frozen=True)
class _Image:
    id: str
    created: int
    size: int
    build: str
    names: tuple[str, ...]


def prune(
    client: docker.DockerClient, registry: str, budget: int, workspace_root: Path
) -> PruneResult:
    """Remove the worker's images, oldest first, until its usage is at most ``budget``."""
    images = sorted(_worker_images(client, registry), key=lambda i: (i.created, i.id))
    cache_size = _build_cache_size(client)
    total = sum(image.size for image in images) + cache_size
    result = PruneResult(usage_before=total, usage_after=total)
    if total <= budget:
        return result
    in_use = {str(c.get("ImageID") or "") for c in client.api.containers(all=True)}
    running, cache_refs = _running_builds(workspace_root)
    held = in_use | _ids_of(client, cache_refs)
    image_bytes = sum(image.size for image in images)
    for image in images:
        if image_bytes + cache_size <= budget:
            break
        if image.id in held or image.build in running:
            continue
        try:
            client.api.remove_image(image.id, force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.RequestException) as exc:
            log.warning("build cache: image %s not removed: %s", image.id, exc)
            result.failed.append(image.id)
            continue
        image_bytes -= image.size
        result.removed.append(image.id)
    if image_bytes + cache_size > budget and cache_size:
        keep = max(0, budget - image_bytes)
        try:
            answer = client.api.prune_builds(keep_storage=keep)
            result.build_cache_reclaimed = int(answer.get("SpaceReclaimed") or 0)
        except (docker.errors.APIError, requests.RequestException) as exc:
            log.warning("build cache: docker builder prune failed: %s", exc)
        cache_size = _build_cache_size(client)
    result.usage_after = image_bytes + cache_size
    return result


def _worker_images(client: docker.DockerClient, registry: str) -> list[_Image]:
    """Images a Portside build made that go by a name under ``registry``."""
    prefix = f"{registry}/"
    found = []
    for image in client.api.images(filters={"label": BUILD_LABEL}):
        names = tuple(
            str(name)
            for name in (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
            if str(name).startswith(prefix)
        )
        if names:
            found.append(
                _Image(
                    id=str(image["Id"]),
                    created=int(image.get("Created") or 0),
                    size=int(image.get("Size") or 0),
                    build=str((image.get("Labels") or {}).get(BUILD_LABEL, "")),
                    names=names,
                )
            )
    return found


def _build_cache_size(client: docker.DockerClient) -> int:
    """BuildKit's cache on the engine (none while only the classic builder runs)."""
    records: Iterable[dict[str, Any]] = client.api.df().get("BuildCache") or []
    return sum(int(record.get("Size") or 0) for record in records if not record.get("Shared"))


def _running_builds(workspace_root: Path) -> tuple[set[str], set[str]]:
    """The ids of the builds with a workspace on this worker (not finished here), and
    the cache references their build steps pulled."""
    builds: set[str] = set()
    refs: set[str] = set()
    if not workspace_root.is_dir():
        return builds, refs
    for workspace in workspace_root.iterdir():
        match = _WORKSPACE.fullmatch(workspace.name)
        if match is None:
            continue
        builds.add(match.group(1))
        with contextlib.suppress(OSError, ValueError, AttributeError):
            refs.update(str(ref) for ref in json.loads((workspace / _CACHE_NOTE).read_text()))
    return builds, refs


def _ids_of(client: docker.DockerClient, references: Iterable[str]) -> set[str]:
    ids = set()
    for reference in references:
        with contextlib.suppress(docker.errors.APIError, requests.RequestException):
            ids.add(str(client.api.inspect_image(reference)["Id"]))
    return ids
