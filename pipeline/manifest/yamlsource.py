"""YAML in, plain data and line numbers out: the one place a manifest's YAML is parsed (safe tags only).

The document is composed first (nodes with their marks), checked, then built by PyYAML's SafeConstructor:
- nesting deeper than MAX_DEPTH, more than MAX_NODES nodes or MAX_EXPANDED_CHARS characters of text counted
  with every alias expanded (a "billion laughs", or one big string reused through aliases, is refused after
  composing its few dozen nodes, before anything is expanded), recursive aliases and duplicate keys in a
  mapping are errors;
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
#: most nodes written out in a document (aliases counted once), checked before any node is built: composing
#: costs about 0.5 KB and 10-20 us a node, so this bounds a manifest's parse to ~250 MB and a few seconds
#: (about 50,000 inline items; big item lists belong in items_from files)
MAX_COMPOSED_NODES = 500_000
#: most characters of scalar text in a document, every alias counted as a full copy of what it points to: a
#: manifest without aliases is at most 10 MB (load.MAX_MANIFEST_BYTES), so only reuse through aliases reaches
#: this (a 1 MB string referenced 3,000 times would make 3 GB of item fields downstream)
MAX_EXPANDED_CHARS = 20_000_000
#: how deep line numbers are recorded (top key / items / item / field / list element)
LINE_DEPTH = 5

Path_ = tuple[str | int, ...]

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_MERGE = "tag:yaml.org,2002:merge"


class _CheckedConstruction:
    """Values PyYAML cannot build (a timestamp like 2025-13-45, a huge int) become marked YAML errors."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except (ValueError, OverflowError, TypeError) as e:
            raise ConstructorError(None, None, f"invalid value ({e})", node.start_mark) from None


class _Loader(_CheckedConstruction, yaml.SafeLoader):
    """SafeLoader with a nesting limit and YAML-1.2-like scalar resolution for ints, floats and booleans."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        self._depth += 1
        self._composed = getattr(self, "_composed", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels", mark)
            if self._composed > MAX_COMPOSED_NODES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ComposerError(None, None, _TOO_MANY, mark)
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1



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


#: libyaml (PyYAML's C parser) when installed: it parses about 20x faster than the pure-Python parser, so even
#: a manifest at the size limit, or one made of tiny nodes, parses in bounded time (pure Python: ~0.1-0.5 MB/s)
_LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))

if _LIBYAML:

    class _CLoader(_CheckedConstruction, yaml.CSafeLoader):
        """The C parser with the same scalar rules; nesting is checked on its event stream first."""

    _CLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


_TOO_MANY = (f"more than {MAX_COMPOSED_NODES} YAML nodes; use items_from: (CSV or JSONL) for big item lists")


def _check_events(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and more than MAX_COMPOSED_NODES nodes before the C composer (which
    recurses, and builds every node) sees the document. The event stream is produced iteratively and nothing
    is kept, so this pass is cheap (~1 us an event) and cannot itself run out of stack or memory."""
    loader = yaml.CBaseLoader(text)
    try:
        depth = nodes = 0
        while loader.check_event():
            event: Any = loader.get_event()
            mark: Any = event.start_mark
            if isinstance(event, yaml.ScalarEvent | yaml.AliasEvent | yaml.CollectionStartEvent):
                nodes += 1
                if nodes > MAX_COMPOSED_NODES:
                    raise ComposerError(None, None, _TOO_MANY, mark)
            if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels", mark)
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as e:  # libyaml stops flow nesting past 1000 levels by itself: same message
        if "nesting depth" not in str(e.problem):
            raise
        raise ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels", e.problem_mark) from None
    finally:
        loader.dispose()


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
    loader: Any = None
    try:
        if _LIBYAML:
            _check_events(text)
            loader = _CLoader(text)
        else:
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
    _record_lines(node, (), lines, set())
    return YamlDoc(data, lines)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_graph(root: Node) -> None:
    """Size (aliases expanded), height and cycles, in time linear in the composed (unexpanded) nodes."""
    done: dict[int, tuple[int, int, int]] = {}  # id -> (expanded size, height, expanded characters)
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        nid = id(node)
        if finished:
            kids = _children(node)
            size = 1 + sum(done[id(k)][0] for k in kids)
            height = 1 + max((done[id(k)][1] for k in kids), default=0)
            chars = (len(node.value) if isinstance(node, ScalarNode) else 0) + sum(done[id(k)][2] for k in kids)
            if size > MAX_NODES:
                raise ComposerError(None, None, f"document expands to more than {MAX_NODES} nodes "
                                    "(an alias bomb?); use items_from: for big item lists", node.start_mark)
            if chars > MAX_EXPANDED_CHARS:
                raise ComposerError(None, None, f"document expands to more than {MAX_EXPANDED_CHARS:,} characters "
                                    "of text with its aliases (a big value reused through aliases?)",
                                    node.start_mark)
            if height > MAX_DEPTH:
                raise ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels (through aliases)",
                                    node.start_mark)
            done[nid] = (size, height, chars)
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


def _record_lines(node: Node, path: Path_, lines: dict[Path_, int], seen: set[int]) -> None:
    """Lines of the paths under `node`. Each node is walked once: below an alias of an already walked node,
    paths fall back to the alias' own line (walking every alias again would record one entry per expanded
    node: a 200 KB document of aliases made 1.8 million entries, 300 MB)."""
    if len(path) >= LINE_DEPTH or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, SequenceNode):
        for i, child in enumerate(node.value):
            lines[(*path, i)] = child.start_mark.line + 1
            _record_lines(child, (*path, i), lines, seen)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode):
                lines[(*path, key.value)] = key.start_mark.line + 1
                _record_lines(value, (*path, key.value), lines, seen)
