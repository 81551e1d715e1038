"""The build step: a checkout's images built on this node's Docker engine.

A fork's build is checked before it runs (its Dockerfile may build on public images
only) and runs without network, cache or branch tag; every image is refused when it
carries a label only Portside may set, and loses the service's build variables from its
history.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import docker

from buildworker import cache, compose, dockerfile, history, images, names
from buildworker.errors import BuildError, PermanentBuildError
from buildworker.handoff import Claim, State
from buildworker.steplog import BuildLog


class ImageBuilder:
    """Builds a claimed build step's images; ``registry`` is where they will be pushed."""

    def __init__(self, docker_client: docker.DockerClient, registry: str, root: Path) -> None:
        self.docker = docker_client
        self.registry = registry
        self.root = root

    def workspace(self, spec: Claim) -> Path:
        return cache.workspace(self.root, spec["build_id"], spec["attempt"])

    def build(
        self,
        spec: Claim,
        state: State,
        build_log: BuildLog,
        stop: threading.Event | None = None,
    ) -> None:
        """Build the images the checkout's compose file (or Dockerfile) names; note them in
        ``state`` (with the compose file and its routed service) for the push."""
        checkout = self.workspace(spec) / "src"
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
            if history.scrub_build_args(
                self.docker, f"{repository}:{tag}", spec.get("build_args", {})
            ):
                build_log("build variables taken out of the image history")
            if branch_tag:
                self.docker.images.get(f"{repository}:{tag}").tag(repository, branch_tag)
            built[key] = {"repository": repository, "tag": tag, "branch_tag": branch_tag}
        state["images"] = built
        state["compose"] = plan.compose.text if plan.compose else None
        state["routed_service"] = plan.compose.routed_service if plan.compose else None

    def _cache_images(self, spec: Claim, references: list[str], build_log: BuildLog) -> list[str]:
        """Those of ``references`` (the branch's last image, then those the control plane
        named: production's) that are here, pulled first when absent; one that cannot be
        pulled (a new branch has no image yet) is left out. They are noted in the
        workspace first, so that the cache budget leaves them alone while the build runs."""
        cache.note_cache_from(self.workspace(spec), references)
        present = []

        def progress(line: str) -> None:
            """The pull's lines but its error, which is said once below (a new branch
            has no image yet: nothing for the build log to call an error)."""
            if not line.startswith("ERROR: "):
                build_log(line)

        for reference in references:
            try:
                if not images.is_present(self.docker, reference):
                    images.pull(self.docker, reference, progress, auth=spec.get("registry_auth"))
            except BuildError as exc:
                build_log(f"no build cache from {reference}: {build_log.mask(str(exc))}")
                continue
            present.append(reference)
        return present

    def _repository(self, spec: Claim, service: str | None) -> str:
        """Where an image goes: a fork's under its pull request's name of its own."""
        if not spec.get("untrusted"):
            return names.image_repository(self.registry, spec["repository"], service)
        if not spec.get("pr_number"):
            raise PermanentBuildError("an untrusted build needs its pull request's number")
        return names.pull_request_repository(
            self.registry, spec["repository"], int(spec["pr_number"]), service
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
        portside = dockerfile.portside_references(references, self.registry)
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
