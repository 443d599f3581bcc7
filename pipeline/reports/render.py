"""Renderers for reports: rich tables for people, one JSON object for scripts, CSV for spreadsheets.

Money is exact everywhere except the tables, which show cents; JSON and CSV carry the exact amounts.
Every piece of data printed through Rich (job names, item ids, tags, provider names and reasons, paths) goes
through `esc` (rich.markup.escape), so `[/bold]` or `[link=...]` in stored text prints as written and an IPv6
URL keeps its brackets. CSV cells are neutralised against formula injection (reports.csvsafe).
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.money import show
from pipeline.reports.csvsafe import safe_row
from pipeline.reports.queries import JobSummary, Totals
from pipeline.reports.stability import ProviderStats


def esc(value: object) -> str:
    """Data as Rich markup that prints exactly `str(value)`."""
    return escape(str(value))


def money(v: Any) -> str:
    return f"${v:,.2f}" if not isinstance(v, str) else v


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def secs(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f}s"


def totals_table(title: str, rows: dict[str, Totals], total: Totals) -> Table:
    t = Table(title=esc(title), title_justify="left")
    for col in ("", "images", "cache hits", "cost", "list price", "saved"):
        t.add_column(col, justify="right" if col else "left")
    for k, v in rows.items():
        t.add_row(esc(k), str(v.images), str(v.cache_hits), money(v.cost_usd), money(v.list_cost_usd),
                  money(v.saved_usd))
    t.add_row("[bold]total", str(total.images), str(total.cache_hits), money(total.cost_usd),
              money(total.list_cost_usd), money(total.saved_usd), end_section=True)
    return t


def render_summary(out: Console, s: JobSummary, *, scope: str = "") -> None:
    c = s.counts
    states = ", ".join(f"{k} {v}" for k, v in c.items() if v)
    out.print(f"[bold]job {s.job_id}[/] {esc(s.name)}: [bold]{esc(s.state)}[/] ({states}){esc(scope)}")
    if s.review.get("approved") or s.review.get("rejected"):
        out.print(f"review: approved {s.review['approved']}, rejected {s.review['rejected']}, "
                  f"unreviewed {s.review['unreviewed']}", highlight=False)
    out.print(totals_table("by provider", s.by_provider, s.totals))
    if len(s.by_resolution) > 0:
        out.print(totals_table("by resolution", s.by_resolution, s.totals))
    if s.maybe_billed_calls:
        out.print(f"[yellow]{s.maybe_billed_calls} calls may have been billed[/] without a known cost (timeouts, "
                  "unreadable answers, crashed workers); they are not in the cost above", highlight=False)
    if s.spooled_items:
        shown = ", ".join(esc(k) for k in s.spooled_keys)
        more = ", ..." if s.spooled_items > len(s.spooled_keys) else ""
        out.print(f"[yellow]{s.spooled_items} items paid but not stored yet[/]: their images wait in this host's "
                  f"spool (.pipeline/spool) because the storage refused them (full or unreachable); they are "
                  f"uploaded when it takes them again: {shown}{more}", highlight=False)
    for key, reason in s.failures:
        out.print(f"  [red]✗[/] {esc(key)}: {esc(reason)}", highlight=False)


def render_report(out: Console, summary: JobSummary | None, by: str, rows: dict[str, Totals], total: Totals) -> None:
    """`pipeline report` as tables: the job's summary (when one is named) and the ledger grouped `by`."""
    note = " (an item with several tags counts under each)" if by == "tag" else ""
    if summary is not None:
        render_summary(out, summary)
        if by != "provider":
            out.print(totals_table(f"by {by}{note}", rows, total))
    else:
        out.print(totals_table(f"by {by}{note}", rows, total))


def report_json(summary: JobSummary | None, by: str, rows: dict[str, Totals], total: Totals, *,
                since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    """One JSON object: the job's summary (or the ledger's totals) plus the grouped rows. Money as strings."""
    obj: dict[str, Any] = summary.as_json() if summary is not None else {
        "cost_usd": show(total.cost_usd), "list_cost_usd": show(total.list_cost_usd),
        "saved_usd": show(total.saved_usd), "images": total.images, "cache_hits": total.cache_hits}
    obj["by"] = by
    obj["since"] = since.isoformat() if since else None
    obj["until"] = until.isoformat() if until else None
    obj["rows"] = {k: v.as_json() for k, v in rows.items()}
    return obj


def write_csv(path: Path, by: str, rows: dict[str, Totals]) -> None:
    """One line per group, exact amounts; no total line (tag groups overlap, and scripts sum themselves). Text
    cells that a spreadsheet would run as a formula are neutralised (reports.csvsafe)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([by, "images", "cache_hits", "cost_usd", "list_cost_usd", "saved_usd"])
        for k, r in rows.items():
            w.writerow(safe_row([k, r.images, r.cache_hits, show(r.cost_usd), show(r.list_cost_usd),
                                 show(r.saved_usd)]))


def error_classes(classes: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(classes.items(), key=lambda kv: -kv[1])) or "-"


def stability_table(title: str, stats: dict[str, ProviderStats]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("provider", "requests", "success", "p50", "p95", "max", "429s", "429 rate", "errors"):
        t.add_column(col, justify="left" if col in ("provider", "errors") else "right")
    for name, st in stats.items():
        t.add_row(esc(name), str(st.requests), pct(st.success_rate), secs(st.p50_ms), secs(st.p95_ms),
                  secs(st.max_ms), str(st.http_429), pct(st.rate_429), esc(error_classes(st.error_classes)))
    return t
