"""Which image references name Portside's registry, however they spell its address."""

from __future__ import annotations

import pytest

from contracts.image_names import (
    is_image_id,
    is_loopback_registry,
    is_registry_reference,
    may_name_registry_image,
    reference_registry,
    same_registry,
)


@pytest.mark.parametrize(
    ("reference", "registry"),
    [
        # The review's examples (finding 4).
        ("localhost:5000/acme/shop:main", "127.0.0.1:5000"),
        ("127.1:5000/acme/shop:main", "127.0.0.1:5000"),
        ("registry.example.com:443/acme/shop:main", "registry.example.com"),
        ("registry.example.com./acme/shop:main", "registry.example.com"),
        # Other spellings of the same address.
        ("127.0.0.1:5000/acme/shop:main", "127.0.0.1:5000"),
        ("LOCALHOST:5000/acme/shop", "127.0.0.1:5000"),
        ("Localhost:5000/acme/shop", "127.0.0.1:5000"),
        ("[::1]:5000/acme/shop", "127.0.0.1:5000"),
        ("[::ffff:127.0.0.1]:5000/acme/shop", "localhost:5000"),
        ("[0:0:0:0:0:0:0:1]:5000/acme/shop", "127.0.0.1:5000"),
        ("0.0.0.0:5000/acme/shop", "127.0.0.1:5000"),
        ("2130706433:5000/acme/shop", "127.0.0.1:5000"),
        ("0x7f000001:5000/acme/shop", "127.0.0.1:5000"),
        ("0177.0.0.1:5000/acme/shop", "127.0.0.1:5000"),
        ("127.0.0.2:5000/acme/shop", "127.0.0.1:5000"),
        ("registry.localhost:5000/acme/shop", "127.0.0.1:5000"),
        ("127.0.0.1:05000/acme/shop", "127.0.0.1:5000"),
        ("Registry.Example.COM/acme/shop", "registry.example.com"),
        ("registry.example.com../acme/shop", "registry.example.com"),
        ("registry.example.com:80/acme/shop", "registry.example.com"),
        ("registry.example.com/acme/shop", "registry.example.com:443"),
        ("registry.example.com/other/image", "https://registry.example.com/team"),
        ("10.0.0.5:5000/acme/shop", "10.0.0.5:5000"),
        ("10.5:5000/acme/shop", "10.0.0.5:5000"),
        ("[2001:db8::1]/acme/shop", "[2001:DB8:0::1]:443"),
        ("python:3.12", "docker.io/acme"),
        ("index.docker.io/library/python", "docker.io"),
    ],
)
def test_the_registry_under_any_spelling_is_the_registry(reference: str, registry: str) -> None:
    assert is_registry_reference(reference, registry)


@pytest.mark.parametrize(
    ("reference", "registry"),
    [
        ("python:3.12", "127.0.0.1:5000"),
        ("acme/shop:main", "127.0.0.1:5000"),
        ("library/nginx", "registry.example.com"),
        ("localhost:5001/acme/shop", "127.0.0.1:5000"),
        ("127.0.0.1/acme/shop", "127.0.0.1:5000"),
        ("registry.example.com:5000/acme/shop", "registry.example.com"),
        ("registry.example.com.evil.com/acme/shop", "registry.example.com"),
        ("evilregistry.example.com/acme/shop", "registry.example.com"),
        ("ghcr.io/acme/shop", "registry.example.com"),
        ("10.0.0.6:5000/acme/shop", "10.0.0.5:5000"),
        ("registry.example.com/acme/shop", "127.0.0.1:5000"),
        ("256.0.0.1:5000/acme/shop", "0.0.0.1:5000"),
    ],
)
def test_another_registry_is_not_the_registry(reference: str, registry: str) -> None:
    assert not is_registry_reference(reference, registry)


@pytest.mark.parametrize(
    ("reference", "registry"),
    [
        ("python", None),
        ("library/python:3", None),
        ("acme/shop", None),
        ("localhost/shop", "localhost"),
        ("Acme/shop", "Acme"),  # upper case is never a Docker Hub namespace
        ("registry.example.com/acme/shop", "registry.example.com"),
        ("host:5000/shop", "host:5000"),
        ("[::1]:5000/shop", "[::1]:5000"),
    ],
)
def test_reference_registry_reads_references_as_docker_does(
    reference: str, registry: str | None
) -> None:
    assert reference_registry(reference) == registry


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("localhost", True),
        ("127.1:5001", True),
        ("[::1]", True),
        ("[::]:80", True),
        ("0:5000", True),
        ("0x7f.1", True),
        ("registry.example.com", False),
        ("10.0.0.1:5000", False),
        ("127.evil.com", False),
    ],
)
def test_loopback_registries(address: str, loopback: bool) -> None:
    assert is_loopback_registry(address) is loopback


def test_same_registry_is_symmetric_and_ignores_scheme_and_path() -> None:
    assert same_registry("https://Registry.Example.com./team", "registry.example.com:443")
    assert same_registry("registry.example.com:443", "https://Registry.Example.com./team")
    assert not same_registry("registry.example.com", "registry.example.org")


@pytest.mark.parametrize(
    ("reference", "image_id"),
    [("3f2a", True), ("sha256:" + "a" * 64, True), ("python", False), ("cafe-x", False)],
)
def test_image_ids(reference: str, image_id: bool) -> None:
    assert is_image_id(reference) is image_id


@pytest.mark.parametrize(
    ("reference", "refused"),
    [
        ("127.0.0.1:5000/acme/shop:main", True),
        ("localhost:5000/acme/shop:main", True),
        ("localhost:5001/other/image", True),  # any registry on the engine's machine
        ("[::1]/acme/shop", True),
        ("3f2a", True),  # an image id prefix: any image the engine holds
        ("sha256:" + "b" * 64, True),
        ("python:3.12", False),
        ("ghcr.io/acme/shop", False),
        ("postgres@sha256:" + "c" * 64, False),
    ],
)
def test_what_may_name_an_image_of_the_registry(reference: str, refused: bool) -> None:
    assert may_name_registry_image(reference, "127.0.0.1:5000") is refused
