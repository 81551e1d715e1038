"""Images no environment needs any more are removed, so an agent's disk does not fill up.

The agent notes which images each deployment of each environment ran (from the labels of
the containers it made, and the image a container-mode deployment names) in a small file
of its state directory. An environment keeps the images of its newest deployment and of
the ``keep`` deployments before it (``PORTSIDE_AGENT_KEEP_IMAGES``: rollback targets that
start without a pull); an environment that is neither desired nor running keeps none.
An image any container on the engine uses (running or stopped, Portside's or not), or a
desired environment names, is never removed, and only images the agent noted are ever
candidates: an operator's own images are not the agent's to judge. Even then the agent
takes away only the names it used itself (the reference a deployment named); an image
that still carries another name afterwards (the build worker's tag on a shared engine, an
operator's own tag, the base image of a test) is someone else's and stays.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from contracts.agentwire import DesiredState
from hostagent import labels as lbl
from hostagent.files import open_dir, read_file, write_file

log = logging.getLogger(__name__)

HISTORY_FILE = "images.json"
HISTORY_VERSION = 2
# Between passes when nothing was applied: a deploy prunes at once; otherwise this often.
PRUNE_INTERVAL = 600.0
# Removals per pass, so that one pass never holds up the agent's tick for long.
MAX_REMOVALS = 10
NO_TAG = "<none>:<none>"
NO_DIGEST = "<none>@<none>"


@dataclass
class ImageHistory:
    """Per environment, the image IDs each deployment ran; the names the agent knew each
    image by; and the images no longer needed that are still to go (in use by a
    container, or their removal failed)."""

    environments: dict[str, dict[int, set[str]]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    references: dict[str, set[str]] = field(default_factory=dict)

    def note(
        self, environment: str, deployment: int, image_id: str, reference: str | None = None
    ) -> None:
        self.environments.setdefault(environment, {}).setdefault(deployment, set()).add(image_id)
        names = self.references.setdefault(image_id, set())
        if reference and reference != image_id:
            names.add(reference)

    def forget(self, image_id: str) -> None:
        """The image is gone (or no longer the agent's): drop the names noted for it."""
        self.references.pop(image_id, None)

    def retire(self, keep: int, alive: set[str]) -> tuple[set[str], set[str]]:
        """Forget all but each live environment's newest ``keep + 1`` deployments.

        Returns the image IDs still noted (kept) and those of the deployments forgotten.
        """
        kept: set[str] = set()
        retired: set[str] = set()
        for name in list(self.environments):
            deployments = self.environments[name]
            newest = sorted(deployments, reverse=True)[: keep + 1] if name in alive else []
            for deployment in list(deployments):
                if deployment in newest:
                    kept |= deployments[deployment]
                else:
                    retired |= deployments.pop(deployment)
            if not deployments:
                del self.environments[name]
        return kept, retired

    def dumps(self) -> str:
        return json.dumps(
            {
                "version": HISTORY_VERSION,
                "environments": {
                    name: {str(dep): sorted(ids) for dep, ids in sorted(deployments.items())}
                    for name, deployments in sorted(self.environments.items())
                },
                "pending": sorted(self.pending),
                "references": {
                    image_id: sorted(names) for image_id, names in sorted(self.references.items())
                },
            },
            indent=1,
        )

    @classmethod
    def loads(cls, text: str) -> ImageHistory:
        """The history in ``text``; an empty one (logged) when it cannot be read."""
        try:
            data = json.loads(text)
            if data.get("version") != HISTORY_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            return cls(
                {
                    str(name): {int(dep): {str(i) for i in ids} for dep, ids in deps.items()}
                    for name, deps in data["environments"].items()
                },
                {str(i) for i in data.get("pending") or []},
                {
                    str(image_id): {str(name) for name in names}
                    for image_id, names in (data.get("references") or {}).items()
                },
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("%s unreadable (%s): starting a new image history", HISTORY_FILE, exc)
            return cls()


@dataclass
class Pruner:
    """Notes what each environment runs and removes the images none needs (see module)."""

    client: Any
    state_dir: Path
    keep: int
    interval: float = PRUNE_INTERVAL
    clock: Callable[[], float] = time.monotonic
    removed: int = 0
    failed: int = 0
    _last_run: float | None = field(default=None, init=False)

    def counts(self) -> tuple[int, int]:
        """Images removed and removals refused, since the agent started."""
        return self.removed, self.failed

    def due(self, applied: bool) -> bool:
        """After applying anything, at the first pass, and every ``interval`` otherwise."""
        return applied or self._last_run is None or self.clock() - self._last_run >= self.interval

    def run(self, desired: DesiredState) -> list[str]:
        """Note what runs now, then remove what nothing needs; the IDs removed."""
        self._last_run = self.clock()
        history = self._load()
        containers = self.client.api.containers(all=True)
        in_use = {str(c.get("ImageID") or "") for c in containers}
        alive = {env.name for env in desired.environments} | {r.name for r in desired.refused}
        if not desired.complete:  # an absence means nothing: every environment may return
            alive |= set(history.environments)
        for container in containers:
            labels: Mapping[str, str] = container.get("Labels") or {}
            environment = labels.get(lbl.ENVIRONMENT)
            deployment = labels.get(lbl.DEPLOYMENT, "")
            if environment and labels.get(lbl.HOST) == desired.host and deployment.isdigit():
                history.note(
                    environment,
                    int(deployment),
                    str(container["ImageID"]),
                    str(container.get("Image") or "") or None,
                )
                alive.add(environment)
        named = set()
        for env in desired.environments:
            image_id = self._image_id(env.image) if env.image else None
            if image_id is not None:
                history.note(env.name, env.deployment_id, image_id, env.image)
                named.add(image_id)
        kept, retired = history.retire(self.keep, alive)
        unneeded = (retired | history.pending) - kept - named
        candidates = sorted(unneeded - in_use)
        # Those a container still uses wait until it is gone, as do those past this pass.
        history.pending = (unneeded & in_use) | set(candidates[MAX_REMOVALS:])
        removed = []
        for image_id in candidates[:MAX_REMOVALS]:
            outcome = self._release(image_id, history.references.get(image_id, set()))
            if outcome is None:
                history.pending.add(image_id)
                continue
            history.forget(image_id)
            if outcome:
                removed.append(image_id)
        self._save(history)
        return removed

    def _image_id(self, reference: str) -> str | None:
        try:
            return str(self.client.api.inspect_image(reference)["Id"])
        except docker.errors.NotFound:
            return None

    def _release(self, image_id: str, references: set[str]) -> bool | None:
        """Take away the names the agent used; remove the image if none is left.

        True: removed (or already gone); False: it keeps a name that is not the agent's,
        so it stays; None: Docker refused, try again at a later pass.
        """
        untagged = False
        try:
            for reference in sorted(references):
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.api.remove_image(reference)
                    untagged = True
            attrs = self.client.api.inspect_image(image_id)
        except docker.errors.NotFound:
            # Its last name took it along (the agent's doing), or it was removed by hand.
            return self._pruned(image_id, references) if untagged else True
        except docker.errors.APIError as exc:
            log.warning("image %s not pruned: %s", image_id, exc)
            self.failed += 1
            return None
        others = [
            name
            for name in (attrs.get("RepoTags") or []) + (attrs.get("RepoDigests") or [])
            if name not in (NO_TAG, NO_DIGEST)
        ]
        if others:
            log.info(
                "image %s not pruned: it is also %s, which the agent did not use",
                image_id,
                ", ".join(others),
            )
            return False
        try:
            self.client.api.remove_image(image_id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("image %s not pruned: %s", image_id, exc)
            self.failed += 1
            return None
        return self._pruned(image_id, references)

    def _pruned(self, image_id: str, references: set[str]) -> bool:
        self.removed += 1
        log.info(
            "pruned image %s (%s): no environment needs it",
            image_id,
            ", ".join(sorted(references)) or "no name",
        )
        return True

    def _load(self) -> ImageHistory:
        with open_dir(self.state_dir) as directory:
            text = read_file(directory, HISTORY_FILE)
        return ImageHistory() if text is None else ImageHistory.loads(text)

    def _save(self, history: ImageHistory) -> None:
        with open_dir(self.state_dir) as directory:
            write_file(directory, HISTORY_FILE, history.dumps())
