"""`items_from:` files: CSV (header row = fields) and JSONL (one JSON object a line), with their line numbers.

CSV: `references` and `tags` cells hold several values separated by '|'; an empty cell of a reserved field
(prompt, resolution, ...) means "not given", an empty cell of any other column is the empty string. A row
shorter than the header leaves the missing columns undefined (a template using them fails on that row).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.files import read_capped
from pipeline.manifest.items import item_label, parse_item
from pipeline.manifest.problems import Loc
from pipeline.manifest.schema import MAX_ITEMS, RESERVED_FIELDS, Item

#: largest items_from file, in bytes
MAX_ITEMS_FILE_BYTES = 200 * 1024 * 1024
#: cells of these columns hold several values separated by this
LIST_SEPARATOR = "|"
_LIST_FIELDS = ("references", "tags")


def decode_utf8(data: bytes, where: str) -> str:
    """UTF-8 text (a leading BOM dropped), or an InputError naming the file and the first bad byte's line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"not valid UTF-8 (byte 0x{data[e.start]:02x} on line {line}); save it as UTF-8",
                         where=f"{where}:{line}") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_items_file(path: Path, display: str) -> list[Item]:
    """Every item of a .csv or .jsonl file; `display` is how messages name the file."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise InputError("items_from must name a .csv or .jsonl file", where=display)
    data = read_capped(path, MAX_ITEMS_FILE_BYTES, what="items_from file", where=display)
    text = decode_utf8(data, display)
    rows = _csv_rows(text, display) if suffix == ".csv" else _jsonl_rows(text, display)
    items: list[Item] = []
    for line, raw in rows:
        if len(items) >= MAX_ITEMS:
            raise InputError(f"more than {MAX_ITEMS} items", where=f"{display}:{line}")
        items.append(parse_item(raw, file=display, line_of=_fixed_line(line)))
    return items


def _fixed_line(line: int) -> Callable[[Loc], int]:
    """Every field of a CSV/JSONL item is on the item's own line."""

    def line_of(_loc: Loc) -> int:
        return line

    return line_of


def _csv_rows(text: str, display: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise InputError(f"CSV error: {e}", where=f"{display}:{reader.line_num}") from None
    if header is None:
        raise InputError("empty CSV file: it needs a header row (id, ...) and one row per item",
                         where=display)
    names = [h.strip() for h in header]
    if any(not n for n in names):
        raise InputError(f"CSV header has an empty column name (column {names.index('') + 1})",
                         where=f"{display}:1")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"CSV header repeats column {', '.join(dupes)}", where=f"{display}:1")
    if "id" not in names:
        raise InputError("CSV header has no 'id' column", where=f"{display}:1")
    id_col = names.index("id")
    previous = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(f"CSV error: {e}", where=f"{display}:{reader.line_num}") from None
        line, previous = previous + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(names):
            label = item_label(row[id_col].strip()) if id_col < len(row) else ""
            raise InputError(f"row has {len(row)} cells but the header has {len(names)} columns",
                             where=f"{display}:{line}{label}")
        raw: dict[str, Any] = {}
        for name, cell in zip(names, row, strict=False):
            if name in _LIST_FIELDS:
                values = [part.strip() for part in cell.split(LIST_SEPARATOR) if part.strip()]
                if values:  # an empty cell means "not given" (the job's default tags apply)
                    raw[name] = values
            elif name == "id":
                raw[name] = cell.strip()
            elif name in RESERVED_FIELDS:
                if cell.strip():
                    raw[name] = cell.strip()
            else:
                raw[name] = cell
        yield line, raw


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json.loads would silently keep the last of two)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} in one object")
        out[key] = value
    return out


def _jsonl_rows(text: str, display: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            obj = json.loads(stripped, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON: {e.msg} (column {e.colno})",
                             where=f"{display}:{number}") from None
        except (ValueError, RecursionError) as e:
            raise InputError(f"invalid JSON: {e}", where=f"{display}:{number}") from None
        yield number, obj
