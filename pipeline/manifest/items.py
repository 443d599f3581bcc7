"""One raw item (a YAML mapping, a CSV row, a JSONL object) -> a validated Item that knows its place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.errors import InputError
from pipeline.manifest.problems import Loc, validate
from pipeline.manifest.schema import BUILTIN_VARS, RESERVED_FIELDS, Item
from pipeline.manifest.values import value_problem


def item_label(raw_id: object) -> str:
    """' (item sku-002)' for messages, or '' when the item has no usable id yet."""
    if isinstance(raw_id, str | int) and not isinstance(raw_id, bool):
        text = str(raw_id)
        return f" (item {text if len(text) <= 60 else text[:57] + '...'})"
    return ""


def parse_item(raw: object, *, file: str, line_of: Callable[[Loc], int]) -> Item:
    """Validate one item. `line_of(loc)` gives the line of a field within the item (`()` = the item)."""
    item_line = line_of(())
    if not isinstance(raw, dict):
        raise InputError(f"an item is a mapping with at least an id (got {type(raw).__name__})",
                         where=f"{file}:{item_line}")
    label = item_label(raw.get("id"))

    def place(loc: Loc) -> str:
        return f"{file}:{line_of(loc)}{label}"

    bad = value_problem(raw)
    if bad is not None:
        path, why = bad
        field = ".".join(str(p) for p in path)
        raise InputError(f"{field}: {why}" if field else why, where=place(path[:1]))
    reserved: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise InputError(f"item field names are non-empty strings (got {key!r})", where=place(()))
        if key in RESERVED_FIELDS:
            reserved[key] = value
        elif key in BUILTIN_VARS:
            raise InputError(f"item field {key!r} is reserved: the pipeline sets the template variable "
                             f"{key!r}", where=place((key,)))
        else:
            variables[key] = value
    return validate(Item, {**reserved, "vars": variables, "where": f"{file}:{item_line}"}, place=place,
                    scope="item")
