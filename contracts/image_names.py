"""Where a service's images live in the registry: the names the build worker pushes to and
the control plane accepts, from one definition; and which image references name that
registry, however they spell its address.

GitHub owners and repositories may be mixed case and hold characters Docker refuses.
Lowercasing is safe for GitHub names (they are case-insensitive there); any other change
appends a short hash of the original, so two different inputs never share a name.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

# The distribution spec's path component: alphanumerics joined by ".", "_", "__" or "-"+.
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_REPOSITORY = 255
HASH_CHARS = 12


def short_hash(value: str, length: int = HASH_CHARS) -> str:
    """A short hex digest that keeps two inputs apart once they were made to look alike."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def path_component(value: str, *, case_matters: bool = False) -> str:
    """``value`` lowercased; if that is not a valid component, sanitized plus a hash.

    ``case_matters`` is for compose service names, where ``Web`` and ``web`` differ.
    """
    lowered = value.lower()
    if _PATH_COMPONENT.fullmatch(lowered) and not (case_matters and lowered != value):
        return lowered
    cleaned = re.sub(r"[^a-z0-9]+", "-", lowered).strip("-") or "x"
    return f"{cleaned[:100]}-{short_hash(value if case_matters else lowered, 8)}"


def image_repository(registry: str, owner_repo: str, compose_service: str | None = None) -> str:
    """``<registry>/<owner>/<repo>[-<service>]``, e.g. ``127.0.0.1:5001/codertocat/hello-world``.

    ``registry`` may carry a path prefix (``registry.example.com/team``); a scheme is dropped.
    """
    host, _, prefix = registry.split("://", 1)[-1].strip("/").partition("/")
    if not host:
        raise ValueError("registry is empty")
    owner, sep, repo = owner_repo.partition("/")
    if not (owner and sep and repo) or "/" in repo:
        raise ValueError(f"expected owner/repo, got {owner_repo!r}")
    last = (
        path_component(f"{repo.lower()}-{compose_service}", case_matters=True)
        if compose_service
        else path_component(repo)
    )
    parts = [path_component(p) for p in prefix.split("/") if p]
    parts += [path_component(owner), last]
    name = "/".join([host.lower(), *parts])
    if len(name) > MAX_REPOSITORY:
        raise ValueError(f"image repository name longer than {MAX_REPOSITORY} characters")
    return name


def pull_request_repository(
    registry: str, owner_repo: str, pr_number: int, compose_service: str | None = None
) -> str:
    """``<registry>/<owner>/<repo>/pr-<n>[/<service>]``: the images of a fork's pull request.

    A name of its own, one path component deeper than any of :func:`image_repository`'s,
    so a fork's build can never write over an image production builds or deploys.
    """
    if pr_number < 1:
        raise ValueError(f"not a pull request number: {pr_number!r}")
    parts = [image_repository(registry, owner_repo), f"pr-{pr_number}"]
    if compose_service:
        parts.append(path_component(compose_service, case_matters=True))
    name = "/".join(parts)
    if len(name) > MAX_REPOSITORY:
        raise ValueError(f"image repository name longer than {MAX_REPOSITORY} characters")
    return name


# An image id or a prefix of one: the engine resolves those to any local image.
_IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]+")
# Docker's grammar for a tag: what a build worker may name an image's tag, and no more.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# Ports a registry answers on when its address names none (HTTPS, or HTTP when insecure).
_DEFAULT_PORTS = ("", "443", "80")
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
# What every loopback or unspecified address of any spelling compares as.
_LOOPBACK = "loopback"


def registry_address(registry: str) -> str:
    """The ``host[:port]`` of a registry setting (``https://registry.example.com/team``
    gives ``registry.example.com``)."""
    return registry.split("://", 1)[-1].strip("/").split("/", 1)[0]


def reference_registry(reference: str) -> str | None:
    """The registry ``host[:port]`` an image reference names, read as Docker reads it
    (a first component with a dot or a colon, ``localhost``, or any upper case is a
    host); None for Docker Hub's short names."""
    first, slash, _ = reference.partition("/")
    if slash and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        return first
    return None


def is_image_id(reference: str) -> bool:
    """True for an image id or a prefix of one, which the engine resolves to any local image."""
    return _IMAGE_ID.fullmatch(reference.lower()) is not None


def split_host_port(address: str) -> tuple[str, str]:
    """``(host, port)`` of ``host[:port]`` or ``[v6][:port]``; the port may be empty."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = address.partition(":")
    return host, port


def is_loopback_registry(address: str) -> bool:
    """True when ``address`` (``host[:port]``) is the engine's own machine under any
    spelling: ``localhost``, ``127.1``, ``2130706433``, ``[::1]``, ``0.0.0.0`` ..."""
    return _canonical_host(split_host_port(address)[0]) == _LOOPBACK


def same_registry(a: str, b: str) -> bool:
    """Whether two registry addresses (``host[:port]``, or settings with a scheme and a
    path) reach the same registry: case, trailing dots, default ports (none, 443, 80),
    IP address spellings and loopback names do not make a registry another one."""
    return _canonical_registry(registry_address(a)) == _canonical_registry(registry_address(b))


def is_registry_reference(reference: str, registry: str) -> bool:
    """True when the image ``reference`` is pulled from ``registry`` (any path in it)."""
    return same_registry(reference_registry(reference) or "docker.io", registry)


def may_name_registry_image(reference: str, registry: str) -> bool:
    """True when the engine may take ``reference`` from ``registry`` or from the images
    it holds: ``registry`` under any spelling, any registry on the engine's own machine,
    or a bare image id (which the engine resolves to any local image). From the text
    alone: the build worker also resolves DNS names, as its engine would."""
    if is_image_id(reference) or is_registry_reference(reference, registry):
        return True
    domain = reference_registry(reference)
    return domain is not None and is_loopback_registry(domain)


def _canonical_registry(address: str) -> tuple[str, str]:
    host, port = split_host_port(address)
    canonical = _canonical_host(host)
    if canonical in _DOCKER_HUB:
        canonical = _DOCKER_HUB[0]
    number = port.lstrip("0") or ("0" if port else "")
    return canonical, "" if number in _DEFAULT_PORTS else number


def _canonical_host(host: str) -> str:
    """One spelling per host: lower case, no trailing dots, IP addresses as ipaddress
    writes them, and every loopback or unspecified address as ``loopback``."""
    name = host.lower().rstrip(".")
    address = _ip_address(name)
    if address is None:
        return _LOOPBACK if name == "localhost" or name.endswith(".localhost") else name
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return _LOOPBACK if address.is_loopback or address.is_unspecified else str(address)


def _ip_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``name`` as an IP address, read as the C library reads a host name that is one:
    IPv6 (a zone dropped), or IPv4 in one to four parts, each decimal, octal (``0``) or
    hexadecimal (``0x``), the last filling the bytes left (``127.1``, ``0x7f000001``)."""
    if ":" in name:
        try:
            return ipaddress.IPv6Address(name.split("%", 1)[0])
        except ValueError:
            return None
    parts = name.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if re.fullmatch(r"0[xX][0-9a-fA-F]*", part):
            numbers.append(int(part[2:] or "0", 16))
        elif re.fullmatch(r"0[0-7]*", part):
            numbers.append(int(part, 8))
        elif re.fullmatch(r"[1-9][0-9]*", part):
            numbers.append(int(part))
        else:
            return None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)
