"""load_manifest: a manifest file (and its items_from file) -> a validated Manifest. Reads, never writes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from pipeline.errors import InputError
from pipeline.files import read_capped
from pipeline.manifest.itemfiles import decode_utf8, read_items_file
from pipeline.manifest.items import parse_item
from pipeline.manifest.problems import Loc, validate
from pipeline.manifest.schema import DEFAULT_OUTPUT_KEY, MAX_ITEMS, Item, Manifest, ManifestFile, ManifestSettings
from pipeline.manifest.templates import TemplateRenderer
from pipeline.manifest.values import value_problem
from pipeline.manifest.yamlsource import YamlDoc, parse_yaml

#: largest manifest file, in bytes
MAX_MANIFEST_BYTES = 10 * 1024 * 1024


def load_manifest(path: Path, *, extra_vars: Mapping[str, object] | None = None) -> Manifest:
    """Read, parse and validate a manifest. Any problem: InputError naming file:line (and the item id)."""
    path = Path(path)
    display = str(path)
    text = decode_utf8(read_capped(path, MAX_MANIFEST_BYTES, what="manifest", where=display), display)
    doc = parse_yaml(text, display)
    if doc.data is None:
        raise InputError("the manifest is empty", where=f"{display}:1")
    if not isinstance(doc.data, dict):
        raise InputError("a manifest is a YAML mapping (job:, providers:, prompt:, items: ...)",
                         where=f"{display}:1")

    def place(loc: Loc) -> str:
        return f"{display}:{doc.line(loc)}"

    bad = value_problem({k: v for k, v in doc.data.items() if k != "items"})  # items: parse_item checks them
    if bad is not None:
        loc, why = bad
        raise InputError(f"{'.'.join(str(p) for p in loc)}: {why}", where=place(loc))
    header = validate(ManifestFile, doc.data, place=place, scope="top-level")
    items = _inline_items(header, doc, display)
    if header.items_from is not None:
        items.extend(_file_items(path, header.items_from, place(("items_from",))))
    if not items:
        where = place(("items",)) if header.items is not None else f"{display}:1"
        raise InputError("no items: give `items:` or `items_from:` with at least one item", where=where)
    if len(items) > MAX_ITEMS:
        raise InputError(f"more than {MAX_ITEMS} items", where=display)
    _check_unique_ids(items)
    _check_templates(header, place)
    settings = {name: getattr(header, name) for name in ManifestSettings.model_fields}
    locations = {str(k): place((k,)) for k in doc.data}
    try:
        return Manifest(**settings, items=tuple(items), source=path, extra_vars=dict(extra_vars or {}),
                        locations=locations)
    except ValueError as e:  # only extra_vars can still be wrong here
        raise InputError(f"invalid extra template variables: {e}", where=display) from None


def _inline_items(header: ManifestFile, doc: YamlDoc, display: str) -> list[Item]:
    out: list[Item] = []
    for index, raw in enumerate(header.items or ()):
        def line_of(loc: Loc, index: int = index) -> int:
            return doc.line(("items", index, *loc))

        out.append(parse_item(raw, file=display, line_of=line_of))
    return out


def _file_items(manifest_path: Path, items_from: str, where: str) -> list[Item]:
    base = manifest_path.parent
    try:
        root = base.resolve()
        target = (root / items_from).resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise InputError(f"items_from {items_from!r}: bad path ({e})", where=where) from None
    if not target.is_relative_to(root):
        raise InputError(f"items_from {items_from!r} leaves the manifest's directory", where=where)
    display = str(base / items_from)
    if not target.exists():
        raise InputError(f"items_from file {display} not found", where=where)
    return read_items_file(target, display)


def _check_unique_ids(items: list[Item]) -> None:
    seen: dict[str, Item] = {}
    for item in items:
        first = seen.setdefault(item.id, item)
        if first is not item:
            raise InputError(f"duplicate item id {item.id!r} (first at {first.where})", where=item.place)


def _check_templates(header: ManifestFile, place: Callable[[Loc], str]) -> None:
    """Compile the job-level templates now, so a syntax error names their own line."""
    renderer = TemplateRenderer()
    if header.prompt is not None:
        renderer.compile(header.prompt, what="prompt", where=place(("prompt",)))
    key = header.output.key if header.output else DEFAULT_OUTPUT_KEY
    renderer.compile(key, what="output key", where=place(("output", "key")))
