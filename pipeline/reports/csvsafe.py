"""CSV cells that a spreadsheet cannot run: neutralising formula ("CSV") injection, as OWASP advises.

Excel, LibreOffice Calc and Google Sheets treat a cell whose first character is `=`, `+`, `-`, `@`, a tab or a
carriage return as a formula (`=HYPERLINK(...)`, `@SUM(...)`, DDE `=cmd|...`). OWASP's CSV Injection page and
ASVS 1.2.10 say: prefix such a cell with a single quote, so the application shows it as text, and quote
fields as RFC 4180 says (the csv module does). Here:
- a text cell starting with one of those characters (also NUL, a line feed and their full-width forms
  `＝ ＋ － ＠`) gets a leading `'`;
- a plain number (`-0.05`, `+3`) is left alone: it is not a formula, and scripts read amounts such as a
  negative `saved_usd` as numbers.
Every CSV the pipeline writes goes through `safe_row`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: first characters that make a spreadsheet read a cell as a formula
FORMULA_START = frozenset("=+-@\t\r\n\x00＝＋－＠")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def safe_cell(value: object) -> object:
    """`value` as it may go into a CSV cell: numbers as they are, text neutralised when it could be a formula."""
    if not isinstance(value, str) or not value or value[0] not in FORMULA_START or _NUMBER.match(value):
        return value
    return "'" + value


def safe_row(row: Iterable[object]) -> list[object]:
    return [safe_cell(v) for v in row]
