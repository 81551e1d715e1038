"""YAML as compose reads it, and the limits that keep one file from costing a host dearly."""

from __future__ import annotations

import pytest
import yaml

from contracts.yamlsafe import (
    MAX_ALIASES,
    MAX_BYTES,
    MAX_DEPTH,
    MAX_NODES,
    YamlRefused,
    dump_yaml,
    load_yaml,
)


def alias_bomb(levels: int, width: int) -> str:
    """``levels`` anchored lists, each holding ``width`` aliases of the one before."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        items = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{items}]")
    return "\n".join(lines) + "\n"


def test_scalars_follow_yaml_1_2():
    document = load_yaml(
        "ports: [22:22, 80]\nflag: on\nyes_: yes\nhex: 0x1f\noct: 0o17\nf: 1.5\n"
        "t: true\nnone: ~\ndate: 2024-01-02\n"
    )
    assert document == {
        "ports": ["22:22", 80],
        "flag": "on",
        "yes_": "yes",
        "hex": 31,
        "oct": 15,
        "f": 1.5,
        "t": True,
        "none": None,
        "date": "2024-01-02",
    }


def test_merge_keys_are_resolved():
    text = "x: &x {restart: always, user: app}\nweb:\n  <<: *x\n  user: root\n"
    assert load_yaml(text)["web"] == {"restart": "always", "user": "root"}


@pytest.mark.parametrize(
    "document",
    [
        {"a": "22:22", "b": "on", "c": "0o17", "d": "2024-01-02", "e": "true", "f": "12"},
        {"services": {"web": {"environment": {"FLAG": "no", "N": "1e3"}, "ports": ["80"]}}},
        {"unicode": "é ☃", "list": [1, 2.5, None, False]},
    ],
)
def test_dump_reads_back_the_same_in_every_reader(document):
    text = dump_yaml(document)
    assert load_yaml(text) == document
    assert yaml.safe_load(text) == document  # YAML 1.1 readers (PyYAML) too


def test_dump_expands_shared_objects_instead_of_anchoring():
    shared = {"restart": "always"}
    text = dump_yaml({"a": shared, "b": shared})
    assert "&" not in text and "*" not in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: " + "x" * MAX_BYTES, "larger than"),
        ("a: " + "é" * (MAX_BYTES // 2), "larger than"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested deeper"),
        # 10 levels of 9 aliases: 10**9 nodes once expanded, refused while parsing.
        (alias_bomb(10, 9), "nodes"),
        ("a: &a x\n" + "".join(f"b{i}: *a\n" for i in range(MAX_ALIASES + 1)), "aliases"),
        ("a: &a [*a]\n", "refers to itself"),
        ("a: 1\na: 2\n", "duplicate key"),
        ("a: [\n", "not valid YAML"),
        ("a: *missing\n", "not valid YAML"),
        ("a: 1\n---\nb: 2\n", "not valid YAML"),
        ("a: !!python/object:os.system x\n", "not valid YAML"),
    ],
    ids=[
        "size",
        "size in bytes",
        "depth",
        "alias bomb",
        "aliases",
        "recursive alias",
        "duplicate key",
        "syntax",
        "undefined alias",
        "two documents",
        "python tag",
    ],
)
def test_limits_and_errors(text, message):
    with pytest.raises(YamlRefused, match=message):
        load_yaml(text)


@pytest.mark.slow
def test_node_limit_without_aliases():
    with pytest.raises(YamlRefused, match="nodes"):
        load_yaml("a: [" + ", ".join(["x"] * MAX_NODES) + "]")


def chained_anchors(anchors: int, depth: int) -> str:
    """``anchors`` anchors, each ``depth`` lists deep around an alias of the one before."""
    lines = []
    for i in range(anchors):
        inner = f"*a{i - 1}" if i else "x"
        lines.append(f"a{i}: &a{i} " + "[" * depth + inner + "]" * depth)
    return "\n".join(lines) + "\n"


def test_depth_counts_what_aliases_expand_to():
    # The review's document: 3300 levels once expanded, which dump_yaml and json.dumps
    # cannot write (RecursionError) though every line of the text is 60 levels deep.
    with pytest.raises(YamlRefused, match="nested deeper"):
        load_yaml(chained_anchors(55, 60))
    with pytest.raises(YamlRefused, match="nested deeper"):
        load_yaml(chained_anchors(2, 40))


@pytest.mark.parametrize(("outer", "refused"), [(MAX_DEPTH - 33, False), (MAX_DEPTH - 32, True)])
def test_an_alias_counts_at_the_depth_it_is_used(outer: int, refused: bool):
    # The anchored list and its scalar span 32 levels (mapping at 1, lists 2-32, x at 33).
    anchored = "a: &a " + "[" * 31 + "x" + "]" * 31 + "\n"
    text = anchored + "b: " + "[" * outer + "*a" + "]" * outer + "\n"
    if refused:
        with pytest.raises(YamlRefused, match="nested deeper"):
            load_yaml(text)
    else:
        assert dump_yaml(load_yaml(text))


def test_within_limits_is_accepted():
    assert load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    text = "a: &a x\n" + "".join(f"b{i}: *a\n" for i in range(MAX_ALIASES))
    assert len(load_yaml(text)) == MAX_ALIASES + 1
