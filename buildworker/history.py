"""Build variables taken out of a built image's history before it is pushed.

The classic builder writes the build arguments a ``RUN`` step saw into that step's
history entry, which anyone who can pull the image can read; the service's build
variables may be secret.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Mapping
from typing import IO

import docker

from buildworker.errors import PermanentBuildError
from buildworker.images import build_error, engine_errors


def scrub_build_args(client: docker.DockerClient, tag: str, buildargs: Mapping[str, str]) -> bool:
    """Take the values of ``buildargs`` out of the image's history; True if it had any.

    The classic builder records the build arguments a ``RUN`` step saw in that step's
    history entry (``|1 NPM_TOKEN=value /bin/sh -c ...``), which is pushed with the image
    for anyone who can pull it to read. The image config is rewritten with ``NAME=***``
    there and loaded back under ``tag``; the layers stay as they are.
    """
    pairs = {f"{name}={value}": f"{name}=***" for name, value in buildargs.items() if value}
    with engine_errors("scrub image history", build_error):
        if not any(
            pair in str(step.get("CreatedBy") or "")
            for step in client.api.history(tag)
            for pair in pairs
        ):
            return False
        old_id = str(client.api.inspect_image(tag)["Id"])
        with tempfile.TemporaryFile() as saved, tempfile.TemporaryFile() as rewritten:
            for chunk in client.api.get_image(tag):
                saved.write(chunk)
            saved.seek(0)
            with (
                tarfile.open(fileobj=saved) as source,
                tarfile.open(fileobj=rewritten, mode="w") as target,
            ):
                _rewrite_config(source, target, tag, pairs)
            rewritten.seek(0)
            for message in client.api.load_image(rewritten):
                if "error" in message or "errorDetail" in message:
                    raise build_error(str(message.get("error") or message["errorDetail"]))
        # The old image is untagged now; its parents stay as this worker's build cache.
        client.api.remove_image(old_id, noprune=True)
    return True


def _rewrite_config(
    source: tarfile.TarFile, target: tarfile.TarFile, tag: str, pairs: Mapping[str, str]
) -> None:
    """Copy a ``docker save`` archive with the image config scrubbed of ``pairs``."""
    manifest = json.load(_member(source, "manifest.json"))
    config = json.load(_member(source, manifest[0]["Config"]))

    def scrub(text: str) -> str:
        for pair, hidden in pairs.items():
            text = text.replace(pair, hidden)
        return text

    for step in config.get("history", []):
        if "created_by" in step:
            step["created_by"] = scrub(step["created_by"])
    for key in ("container_config", "ContainerConfig"):
        command = (config.get(key) or {}).get("Cmd")
        if command:
            config[key]["Cmd"] = [scrub(str(part)) for part in command]
    skipped = {"manifest.json", "repositories", manifest[0]["Config"]}
    for member in source:
        if member.name not in skipped:
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
    data = json.dumps(config).encode()
    manifest[0].update(Config=f"{hashlib.sha256(data).hexdigest()}.json", RepoTags=[tag])
    for name, content in (
        (manifest[0]["Config"], data),
        ("manifest.json", json.dumps(manifest).encode()),
    ):
        info = tarfile.TarInfo(name)
        info.size = len(content)
        target.addfile(info, io.BytesIO(content))


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    member = archive.extractfile(name)
    if member is None:
        raise PermanentBuildError(f"the saved image has no {name}")
    return member
