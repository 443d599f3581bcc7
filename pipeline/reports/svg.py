"""Inline SVG bar charts for the HTML report: no script, no external resources, escaped labels."""

from __future__ import annotations

from decimal import Decimal
from html import escape

#: height of one bar row, pixels
ROW_PX = 24
#: width of the label column and of the value column, pixels
LABEL_PX = 120
VALUE_PX = 190
COST_COLOUR = "#2f6fd6"
LIST_COLOUR = "#d5deec"


def dollars(v: Decimal) -> str:
    return f"${v:,.2f}"


def cost_bars(rows: list[tuple[str, Decimal, Decimal]], *, title: str, width_px: int = 680) -> str:
    """One row per (label, cost, list price): the list price as a pale bar, the cost drawn over it, so the
    pale part that shows is what was saved. Bars share one scale (the largest amount)."""
    if not rows:
        return f'<p class="muted">{escape(title)}: no costs recorded.</p>'
    top = max(max(cost, lst) for _, cost, lst in rows)
    bar_px = width_px - LABEL_PX - VALUE_PX
    height = ROW_PX * len(rows) + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" width="{width_px}" '
             f'height="{height}" viewBox="0 0 {width_px} {height}"><title>{escape(title)}</title>']
    for i, (label, cost, lst) in enumerate(rows):
        y = 4 + i * ROW_PX
        w_list = _scaled(lst, top, bar_px)
        w_cost = _scaled(cost, top, bar_px)
        text_y = y + ROW_PX // 2 + 4
        parts.append(
            f'<text x="{LABEL_PX - 8}" y="{text_y}" text-anchor="end" class="lbl">{escape(_short(label))}</text>'
            f'<rect x="{LABEL_PX}" y="{y + 3}" width="{w_list}" height="{ROW_PX - 6}" fill="{LIST_COLOUR}"/>'
            f'<rect x="{LABEL_PX}" y="{y + 3}" width="{w_cost}" height="{ROW_PX - 6}" fill="{COST_COLOUR}"/>'
            f'<text x="{LABEL_PX + bar_px + 8}" y="{text_y}" class="val">{dollars(cost)} '
            f'(list {dollars(lst)})</text>')
    parts.append("</svg>")
    return "".join(parts)


def _scaled(v: Decimal, top: Decimal, px: int) -> str:
    if top <= 0 or v <= 0:
        return "0"
    return f"{max(float(v / top) * px, 1.0):.1f}"


def _short(label: str, limit: int = 16) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
