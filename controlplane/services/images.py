"""A build's images as people read them: the API, the CLI and the dashboard list what a
build pushed, and so what its deployments run, by digest.

The build row keeps them as a JSON object keyed by compose service (``app`` for a single
container), which PostgreSQL stores in an order of its own; the listing follows the
build's compose file instead, so the same build always reads the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.image_names import DIGEST_RE
from contracts.yamlsafe import YamlRefused, load_yaml
from controlplane.models import Build


def listed(build: Build) -> list[dict[str, Any]]:
    """Each image of ``build`` as ``service``, ``repository``, ``tag``, ``digest`` and the
    ``reference`` that runs (``repository@digest``), in the compose file's service order
    (services the file does not name, if any, after them by name)."""
    stored: Mapping[str, Any] = build.images or {}
    order = [name for name in _compose_services(build.compose) if name in stored]
    order += sorted(name for name in stored if name not in order)
    result = []
    for name in order:
        image = stored[name] if isinstance(stored[name], Mapping) else {}
        repository, digest = image.get("repository"), image.get("digest")
        result.append(
            {
                "service": name,
                "repository": repository,
                "tag": image.get("tag"),
                "digest": digest,
                "reference": f"{repository}@{digest}" if repository and digest else None,
            }
        )
    return result


def pushed(build: Build) -> dict[str, str]:
    """Each image ``build`` pushed, by key (compose service, or ``app``), as the
    ``repository@digest`` it went to the registry under; entries without a digest (not
    pushed yet) are left out."""
    found = {}
    for key, image in (build.images or {}).items():
        if not isinstance(image, Mapping):
            continue
        repository, digest = image.get("repository"), image.get("digest")
        if isinstance(repository, str) and isinstance(digest, str) and DIGEST_RE.fullmatch(digest):
            found[str(key)] = f"{repository}@{digest}"
    return found


def _compose_services(compose: str | None) -> list[str]:
    """The service names of a pinned compose file in its order (none if unreadable: it
    was checked when recorded, so that is an old or hand-edited row)."""
    if not compose:
        return []
    try:
        document = load_yaml(compose)
    except YamlRefused:
        return []
    services = document.get("services") if isinstance(document, Mapping) else None
    return [str(name) for name in services] if isinstance(services, Mapping) else []
