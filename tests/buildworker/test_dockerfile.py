"""The images a fork's Dockerfile builds on, and which of them are Portside's own."""

from __future__ import annotations

import pytest

from buildworker.dockerfile import image_references, portside_references, read
from buildworker.errors import PermanentBuildError

REGISTRY = "127.0.0.1:5001"


def refs(text: str, buildargs: dict[str, str] | None = None) -> list[tuple[str, int, str]]:
    return [(r.reference, r.line, r.instruction) for r in image_references(text, buildargs or {})]


def refused(text: str, buildargs: dict[str, str] | None = None) -> list[str]:
    found = image_references(text, buildargs or {})
    return [r.reference for r in portside_references(found, REGISTRY)]


def test_stages_scratch_and_stage_indexes_are_not_images() -> None:
    text = (
        "# a comment\n"
        "FROM --platform=linux/amd64 python:3.12 AS Build\n"
        "RUN make\n"
        "FROM scratch\n"
        "COPY --from=build /app /app\n"
        "COPY --from=0 /x /x\n"
        "FROM build\n"
        "COPY --chown=1:1 --from=nginx:1.27 /etc/nginx /etc/nginx\n"
    )
    assert refs(text) == [("python:3.12", 2, "FROM"), ("nginx:1.27", 8, "COPY --from")]


def test_global_args_are_resolved_as_the_builder_does() -> None:
    text = (
        "ARG BASE=python VERSION=3.12\n"
        'ARG REGISTRY="127.0.0.1:5001"\n'
        "FROM ${BASE}:$VERSION-slim\n"
        "ARG VERSION=9\n"  # not global: FROM lines do not see it
        "FROM ${REGISTRY}/o/r:main AS two\n"
        "FROM ${MISSING:-alpine}:${VERSION:+3}\n"
    )
    assert refs(text) == [
        ("python:3.12-slim", 3, "FROM"),
        ("127.0.0.1:5001/o/r:main", 5, "FROM"),
        ("alpine:3", 6, "FROM"),
    ]
    # A build argument overrides the default of a declared ARG, and only of one.
    assert refs("ARG BASE=python\nFROM $BASE\n", {"BASE": "127.0.0.1:5001/o/r:main"}) == [
        ("127.0.0.1:5001/o/r:main", 2, "FROM")
    ]
    assert refs("FROM python$UNDECLARED\n", {"UNDECLARED": ":x"}) == [("python", 1, "FROM")]


@pytest.mark.parametrize(
    "text",
    [
        "FROM ${BASE:?required}\n",  # a form the resolver does not know
        "ARG X\nFROM $X\n",  # resolves to nothing
        "FROM python\nCOPY --from=$STAGE /a /a\n",
        "FROM a b c d\n",
    ],
)
def test_what_cannot_be_resolved_is_refused(text: str) -> None:
    with pytest.raises(PermanentBuildError, match="line"):
        image_references(text, {})


def test_continuations_escape_directive_and_onbuild() -> None:
    text = (
        "# escape=`\n"
        "FROM `\n"
        "  # a comment inside the instruction\n"
        "  127.0.0.1:5001/o/r:main\n"
        "ONBUILD COPY --from=localhost:5001/o/r:main / /\n"
    )
    assert refs(text) == [
        ("127.0.0.1:5001/o/r:main", 2, "FROM"),
        ("localhost:5001/o/r:main", 5, "COPY --from"),
    ]


@pytest.mark.parametrize(
    "reference",
    [
        "127.0.0.1:5001/o/r:main",
        "127.0.0.1:5001/o/r/pr-7:abc",
        "LOCALHOST:5001/o/r:main",
        "localhost/o/r",  # a loopback registry on another port is no better
        "127.1:5001/o/r:main",
        "2130706433:5001/o/r:main",  # 127.0.0.1 as one number
        "[::1]:5001/o/r:main",
        "0.0.0.0:5001/o/r",
        "3f2a",  # an image id prefix: any local image, production's too
        "sha256:" + "a" * 64,
    ],
)
def test_the_portside_registry_under_any_name_is_refused(reference: str) -> None:
    assert refused(f"FROM {reference}\n") == [reference]
    assert refused(f"FROM python\nCOPY --from={reference} / /\n") == [reference]


@pytest.mark.parametrize("reference", ["python:3.12", "library/nginx", "octo/app:main", "cafe-x"])
def test_docker_hub_images_are_allowed(reference: str) -> None:
    assert refused(f"FROM {reference}\n") == []


@pytest.mark.parametrize(
    "reference",
    [
        "registry.example.com/team/o/r:main",
        "registry.example.com:443/team/o/r:main",  # the default port, spelt out
        "registry.example.com./team/o/r:main",  # the fully qualified name
        "Registry.Example.COM/o/r",
    ],
)
def test_a_registry_given_with_a_scheme_and_prefix_is_matched_by_its_host(reference) -> None:
    found = image_references(f"FROM {reference}\n", {})
    assert portside_references(found, "https://registry.example.com/team") == found


def test_the_dockerfile_is_read_inside_the_context_only(tmp_path) -> None:
    context = tmp_path / "src"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM python\n")
    (tmp_path / "Outside").write_text("FROM python\n")
    (context / "Linked").symlink_to(tmp_path / "Outside")
    (context / "sub").symlink_to(tmp_path)
    assert read(context, "Dockerfile") == "FROM python\n"
    for name in ("Linked", "../Outside", "sub/Outside", "/etc/hostname"):
        with pytest.raises(PermanentBuildError, match="inside the build context"):
            read(context, name)
    with pytest.raises(PermanentBuildError, match="not found"):
        read(context, "Missing")
