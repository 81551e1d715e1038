"""YAML as docker compose reads it, with limits an untrusted file cannot get around.

Compose files come from pushed repositories and are parsed by the build worker, the
control plane and every host agent, so one file must never cost more than a bounded amount
of memory or time: the text, the nesting depth, the aliases and the nodes (aliases counted
at the size and depth of what they repeat) are limited while the file is composed, before
anything is expanded. Scalars follow YAML 1.2 like compose does: ``22:22`` and ``on`` stay strings.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import Resolver

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_NODES = 200_000

# YAML 1.2 core schema scalars (what compose's Go parser reads as booleans and numbers).
_YAML12 = (
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+|0o[0-7]+", "-+0123456789"),
    (
        "float",
        r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        "-+0123456789.",
    ),
)


class YamlRefused(ValueError):
    """The text is not YAML, or goes over one of the limits."""


try:  # libyaml's parser is five times faster; composing stays in Python, where we count.
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser as _PyParser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, _PyParser):  # type: ignore[no-redef,misc]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            _PyParser.__init__(self)


class _Loader(Composer, _Parser, SafeConstructor, Resolver):  # type: ignore[misc]
    """A safe loader with YAML 1.2 scalars, limits, and duplicate keys refused.

    PyYAML's 1.1 rules would turn ``22:22`` into 1342 and ``on`` into True (and a file
    written back would change); timestamps stay strings as compose keeps them.
    """

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        Composer.__init__(self)
        self._depth = 0
        self._nodes = 0
        self._aliases = 0
        self._anchor_sizes: dict[str, int] = {}
        # How many levels each anchored node spans, its aliases expanded.
        self._anchor_heights: dict[str, int] = {}
        # The deepest level reached under each node being composed, aliases expanded.
        self._reached = [0]

    def _count(self, nodes: int) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise YamlRefused(f"more than {MAX_NODES} YAML nodes (aliases expanded)")

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlRefused(f"more than {MAX_ALIASES} YAML aliases")
            size = self._anchor_sizes.get(event.anchor)
            if size is None and event.anchor in self.anchors:
                raise YamlRefused(f"alias *{event.anchor} refers to itself")
            self._count(size or 0)
            # What the alias repeats is nested where the alias stands (so a chain of
            # anchors, each used inside the next, goes as deep as all of them together).
            self._reach(self._depth + self._anchor_heights.get(event.anchor, 0))
            node: Node = super().compose_node(parent, index)
            return node
        anchor = self.peek_event().anchor
        self._depth += 1
        self._reach(self._depth)
        self._count(1)
        before = self._nodes
        self._reached.append(self._depth)
        node = super().compose_node(parent, index)
        reached = self._reached.pop()
        self._reached[-1] = max(self._reached[-1], reached)
        self._depth -= 1
        if anchor is not None:
            self._anchor_sizes[anchor] = self._nodes - before + 1
            self._anchor_heights[anchor] = reached - self._depth
        return node

    def _reach(self, depth: int) -> None:
        """Refuse nesting deeper than MAX_DEPTH once aliases are expanded: writers of
        the data (``json.dumps``, :func:`dump_yaml`) recurse once per level."""
        if depth > MAX_DEPTH:
            raise YamlRefused(f"YAML nested deeper than {MAX_DEPTH} levels (aliases expanded)")
        self._reached[-1] = max(self._reached[-1], depth)

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        node: MappingNode = super().compose_mapping_node(anchor)
        seen: set[str] = set()
        for key, _value in node.value:
            if isinstance(key, ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in seen:
                    raise YamlRefused(f"duplicate key {key.value!r} at {key.start_mark}")
                seen.add(key.value)
        return node


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if not tag.endswith((":bool", ":int", ":float", ":timestamp"))
    ]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in _YAML12:
    _Loader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), list(_first)
    )


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]
    """Quotes any string that YAML 1.1 or 1.2 would read as something else; no anchors.

    The output is read back the same by PyYAML, by :func:`load_yaml` and by compose.
    """

    def ignore_aliases(self, data: Any) -> bool:
        return True


for _tag, _pattern, _first in _YAML12:
    _Dumper.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), list(_first)
    )


def load_yaml(text: str) -> Any:
    """One YAML document, parsed within the limits; :class:`YamlRefused` otherwise."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlRefused(f"YAML text larger than {MAX_BYTES} bytes")
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise YamlRefused(f"not valid YAML: {exc}") from None
    except RecursionError:
        raise YamlRefused("YAML nested too deeply") from None
    finally:
        loader.dispose()


def dump_yaml(document: Any) -> str:
    """``document`` as block-style YAML, keys in their order, that loads back the same."""
    dumped: str = yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return dumped
