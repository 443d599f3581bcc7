"""Checks on raw manifest values (YAML, CSV cells, JSONL) that pydantic's types do not make, so that what
validates is stored and rendered the same on Postgres and SQLite:

- no NUL character and no lone surrogate in any text, key or value (Postgres refuses NUL in text and JSON;
  a lone surrogate cannot be encoded as UTF-8 by either database driver);
- numbers are finite: `1e999` overflows to inf and `.nan` is not a number, either would print as "inf" or
  "nan" in a prompt;
- item ids and tags are NFC-normalised and hold no control, format (bidirectional overrides, zero-width
  characters), surrogate or line/paragraph separator characters: they become file names and report cells.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

#: characters no stored text may hold: NUL, and lone surrogates (not encodable as UTF-8)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: Unicode categories refused in ids and tags: control, format (bidi overrides, zero-width), surrogate,
#: line and paragraph separators
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored as is, or None."""
    m = _UNSTORABLE.search(text)
    if m is None:
        return None
    if m.group() == "\x00":
        return "a NUL character (\\x00) is not allowed in text (the database cannot store it)"
    return f"invalid Unicode (a lone surrogate U+{ord(m.group()):04X})"


def value_problem(value: Any) -> tuple[tuple[str | int, ...], str] | None:
    """(path inside `value`, why) of the first unstorable string or non-finite number in `value` (nested lists
    and mappings, keys included), or None. Iterative: nesting depth cannot overflow the stack."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            problem = text_problem(v)
            if problem:
                return path, problem
        elif isinstance(v, float) and not math.isfinite(v):
            what = "not a number (nan)" if math.isnan(v) else "too large: it overflows to infinity"
            return path, f"the number is {what}; quote it if it is meant as text"
        elif isinstance(v, dict):
            for k, item in v.items():
                if isinstance(k, str):
                    problem = text_problem(k)
                    if problem:
                        return (*path, k), f"field name: {problem}"
                stack.append(((*path, str(k)), item))
        elif isinstance(v, list | tuple):
            stack.extend(((*path, i), item) for i, item in enumerate(v))
    return None


def identifier_problem(text: str) -> str | None:
    """Why `text` (already NFC) cannot be an item id or a tag, or None."""
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in _REFUSED_CATEGORIES:
            kind = {"Cc": "a control", "Cf": "a format (bidirectional or invisible)", "Cs": "a surrogate",
                    "Zl": "a line separator", "Zp": "a paragraph separator"}[cat]
            return f"{kind} character U+{ord(ch):04X} is not allowed"
    return None


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)
