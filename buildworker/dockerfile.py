"""The images a Dockerfile builds on, read the way the classic builder reads them.

A fork's Dockerfile must not start from (``FROM``) or copy out of (``COPY --from``) an
image Portside built: those are production's, on the same engine and in the same
registry. This module lists every image reference a Dockerfile names, with the global
``ARG`` defaults and the build arguments substituted as the builder would; what it cannot
resolve with certainty it refuses, since a guess could let such an image through.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from buildworker.errors import PermanentBuildError
from contracts.image_names import (
    may_name_registry_image,
    reference_registry,
    registry_address,
    split_host_port,
)

MAX_SIZE = 1024 * 1024
_DIRECTIVE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(\S*)\s*")
# ${NAME}, ${NAME:-word}, ${NAME:+word} (groups 1-3) or $NAME (group 4).
_VARIABLE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}$]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True, slots=True)
class ImageReference:
    """An image a Dockerfile names, after substitution, and the line that names it."""

    reference: str
    line: int
    instruction: str  # "FROM" or "COPY --from"


def read(context: Path, dockerfile: str) -> str:
    """The Dockerfile's text, refused when reaching it takes a symlink or leaves the
    context (the engine resolves it inside the context, so this read must too)."""
    path = Path(os.path.normpath(context / dockerfile))
    if os.path.realpath(path) != str(path) or context not in path.parents:
        raise PermanentBuildError(
            f"Dockerfile {dockerfile!r} must be a regular file inside the build context"
        )
    if not path.is_file():
        raise PermanentBuildError(f"Dockerfile {dockerfile!r} not found in the build context")
    if path.stat().st_size > MAX_SIZE:
        raise PermanentBuildError(f"Dockerfile {dockerfile!r} is larger than {MAX_SIZE} bytes")
    return path.read_text(encoding="utf-8", errors="replace")


def image_references(text: str, buildargs: Mapping[str, str]) -> list[ImageReference]:
    """Every image ``text`` builds on or copies from (stage names and ``scratch`` left
    out), with global ARGs resolved; PermanentBuildError when one cannot be resolved."""
    meta: dict[str, str] = {}
    stages: set[str] = set()
    found: list[ImageReference] = []
    seen_from = False
    for number, words in _instructions(text):
        instruction, arguments = words[0].upper(), words[1:]
        if instruction == "ONBUILD" and arguments:
            instruction, arguments = arguments[0].upper(), arguments[1:]
        if instruction == "ARG" and not seen_from:
            meta.update(_declared(arguments, buildargs))
        elif instruction == "FROM":
            seen_from = True
            image, stage = _from_parts(arguments, number)
            image = _substitute(image, meta, number)
            if image.lower() not in stages and image.lower() != "scratch":
                found.append(ImageReference(image, number, "FROM"))
            if stage:
                stages.add(stage.lower())
        elif instruction in ("COPY", "ADD"):
            for flag in arguments:
                if not flag.startswith("--"):
                    break
                if flag.lower().startswith("--from="):
                    source = flag.split("=", 1)[1]
                    if "$" in source:
                        raise PermanentBuildError(
                            f"Dockerfile line {number}: a variable in COPY --from is not "
                            "allowed for a fork's build"
                        )
                    if source.lower() not in stages and not source.isdigit():
                        found.append(ImageReference(source, number, "COPY --from"))
    return found


def portside_references(references: list[ImageReference], registry: str) -> list[ImageReference]:
    """The references that may name an image of the Portside registry ``registry``:
    :func:`contracts.image_names.may_name_registry_image` (its address under any
    spelling, a loopback registry, a bare image id), or a DNS name resolving to one of
    the registry's addresses or to a loopback one (the same registry to the engine)."""
    address = registry_address(registry)
    addresses = _addresses(split_host_port(address)[0])
    return [ref for ref in references if _names_registry(ref.reference, address, addresses)]


def _names_registry(reference: str, registry: str, registry_addresses: set[str]) -> bool:
    if may_name_registry_image(reference, registry):
        return True
    domain = reference_registry(reference)
    if domain is None:
        return False  # Docker Hub: no registry host in the reference
    addresses = _addresses(split_host_port(domain)[0])
    return bool(addresses & registry_addresses) or any(_is_local(a) for a in addresses)


def _addresses(name: str) -> set[str]:
    """The addresses ``name`` resolves to, as the engine would resolve it; none if it
    does not resolve (then the engine cannot reach it either)."""
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except (OSError, UnicodeError):
        return set()


def _is_local(address: str) -> bool:
    parsed = ipaddress.ip_address(address.split("%", 1)[0])
    return parsed.is_loopback or parsed.is_unspecified


def _instructions(text: str) -> list[tuple[int, list[str]]]:
    """(line number, words) of each instruction, continuation lines joined, comments and
    the ``# escape=`` parser directive honoured."""
    escape = "\\"
    lines = text.splitlines()
    for line in lines:
        directive = _DIRECTIVE.fullmatch(line.strip())
        if directive is None:
            break
        if directive.group(1).lower() == "escape" and directive.group(2) in ("\\", "`"):
            escape = directive.group(2)
    result: list[tuple[int, list[str]]] = []
    parts: list[str] = []
    start = 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and (not stripped or stripped.startswith("#")):
            continue  # comments and blank lines inside a continuation are dropped
        if not parts:
            start = number
        continued = stripped.endswith(escape)
        parts.append(stripped[:-1] if continued else stripped)
        if not continued:
            result.append((start, " ".join(parts).split()))
            parts = []
    if parts:
        result.append((start, " ".join(parts).split()))
    return [(number, words) for number, words in result if words]


def _declared(arguments: list[str], buildargs: Mapping[str, str]) -> dict[str, str]:
    """The global ARGs of one ``ARG`` line: a build argument overrides the default."""
    declared = {}
    for word in arguments:
        name, has_default, default = word.partition("=")
        if len(default) >= 2 and default[0] == default[-1] and default[0] in "'\"":
            default = default[1:-1]
        declared[name] = buildargs.get(name, default if has_default else "")
    return declared


def _from_parts(arguments: list[str], number: int) -> tuple[str, str | None]:
    words = [word for word in arguments if not word.startswith("--")]
    if len(words) == 1:
        return words[0], None
    if len(words) == 3 and words[1].lower() == "as":
        return words[0], words[2]
    raise PermanentBuildError(f"Dockerfile line {number}: cannot read this FROM instruction")


def _substitute(value: str, meta: Mapping[str, str], number: int) -> str:
    """``$NAME``, ``${NAME}``, ``${NAME:-word}`` and ``${NAME:+word}`` from the global
    ARGs; anything else with a ``$`` is refused."""

    result = []
    position = 0
    for match in _VARIABLE.finditer(value):
        result.append(value[position : match.start()])
        name = match.group(1) or match.group(4)
        current = meta.get(name, "")
        modifier, word = match.group(2), match.group(3) or ""
        if modifier == "-":
            result.append(current or word)
        elif modifier == "+":
            result.append(word if current else "")
        else:
            result.append(current)
        position = match.end()
    result.append(value[position:])
    resolved = "".join(result)
    if "$" in resolved or not resolved:
        raise PermanentBuildError(
            f"Dockerfile line {number}: cannot resolve the image of FROM {value!r} for a "
            "fork's build (use plain ARG defaults)"
        )
    return resolved
