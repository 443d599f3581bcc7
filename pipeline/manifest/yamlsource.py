"""YAML in, plain data and line numbers out: the one place a manifest's YAML is parsed (safe tags only).

The document is composed first (nodes with their marks), checked, then built by PyYAML's SafeConstructor:
- nesting deeper than MAX_DEPTH, more than MAX_NODES nodes counted with every alias expanded (a "billion
  laughs" is refused after composing its few dozen nodes, before anything is expanded), recursive aliases
  and duplicate keys in a mapping are errors;
- scalars resolve the YAML 1.2 way where 1.1 surprises people: only true/false are booleans (`NO` stays a
  string), no base-60 numbers (`16:9` stays a string), integers with a leading zero stay strings (`007`).
Line numbers (1-based) are kept per path (`("items", 3, "resolution")`) so later errors can name file:line.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.errors import InputError

#: deepest nesting of collections (manifests need about 5)
MAX_DEPTH = 64
#: most nodes in a document, every alias counted as a full copy of what it points to
MAX_NODES = 2_000_000
#: how deep line numbers are recorded (top key / items / item / field / list element)
LINE_DEPTH = 5

Path_ = tuple[str | int, ...]

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader with a nesting limit and YAML-1.2-like scalar resolution for ints, floats and booleans."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as e:  # e.g. a timestamp like 2025-13-45, a huge int
            raise ConstructorError(None, None, f"invalid value ({e})", node.start_mark) from None


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT, _BOOL)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class YamlDoc:
    """A parsed document: plain data (dicts, lists, scalars) and the start line of each path."""

    data: Any
    lines: Mapping[Path_, int]

    def line(self, path: Path_) -> int:
        """The line of `path`, or of its nearest recorded ancestor."""
        for n in range(len(path), -1, -1):
            found = self.lines.get(path[:n])
            if found is not None:
                return found
        return 1


def parse_yaml(text: str, where: str) -> YamlDoc:
    """Parse one YAML document; every problem is an InputError at `where:LINE`."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return YamlDoc(None, {(): 1})
        _check_graph(node)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = ": ".join(str(p) for p in (e.context, e.problem) if p)
        raise InputError(f"YAML error: {problem}", where=f"{where}:{line}") from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, max(e.position, 0)) + 1
        raise InputError(f"YAML error: {e.reason} (character {e.character!r})",
                         where=f"{where}:{line}") from None
    except yaml.YAMLError as e:
        raise InputError(f"YAML error: {e}", where=where) from None
    except RecursionError:
        raise InputError("YAML nested too deeply", where=where) from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[Path_, int] = {(): node.start_mark.line + 1}
    _record_lines(node, (), lines)
    return YamlDoc(data, lines)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_graph(root: Node) -> None:
    """Size (aliases expanded), height and cycles, in time linear in the composed (unexpanded) nodes."""
    done: dict[int, tuple[int, int]] = {}  # id -> (expanded size, height)
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        nid = id(node)
        if finished:
            kids = _children(node)
            size = 1 + sum(done[id(k)][0] for k in kids)
            height = 1 + max((done[id(k)][1] for k in kids), default=0)
            if size > MAX_NODES:
                raise ComposerError(None, None, f"document expands to more than {MAX_NODES} nodes "
                                    "(an alias bomb?); use items_from: for big item lists", node.start_mark)
            if height > MAX_DEPTH:
                raise ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels (through aliases)",
                                    node.start_mark)
            done[nid] = (size, height)
            open_.discard(nid)
            continue
        if nid in done:
            continue
        if nid in open_:
            raise ComposerError(None, None, "recursive alias", node.start_mark)
        open_.add(nid)
        if isinstance(node, MappingNode):
            _check_duplicate_keys(node)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node))


def _check_duplicate_keys(node: MappingNode) -> None:
    seen: dict[tuple[str, Hashable], int] = {}
    for key, _value in node.value:
        if isinstance(key, ScalarNode) and key.tag != _MERGE:
            ident = (key.tag, key.value)
            if ident in seen:
                raise ComposerError(None, None, f"duplicate key {key.value!r} (first on line {seen[ident]})",
                                    key.start_mark)
            seen[ident] = key.start_mark.line + 1


def _record_lines(node: Node, path: Path_, lines: dict[Path_, int]) -> None:
    if len(path) >= LINE_DEPTH:
        return
    if isinstance(node, SequenceNode):
        for i, child in enumerate(node.value):
            lines[(*path, i)] = child.start_mark.line + 1
            _record_lines(child, (*path, i), lines)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode):
                lines[(*path, key.value)] = key.start_mark.line + 1
                _record_lines(value, (*path, key.value), lines)
