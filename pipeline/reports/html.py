"""The job report as one self-contained HTML page: inline CSS, inline SVG charts, thumbnails as data: URIs.

Nothing on the page is fetched from anywhere: full images are plain links to their stored URLs. Totals carry
`data-testid` attributes and their exact value in `data-value` (the strings `pipeline report JOB --json`
prints); a few lines of inline script mark on <body> whether every thumbnail loaded, for headless checks.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from pipeline.money import show
from pipeline.reports.jobpage import GalleryItem, JobPage
from pipeline.reports.render import error_classes, pct, secs
from pipeline.reports.svg import COST_COLOUR, LIST_COLOUR, cost_bars, dollars

_CSS = """
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f6f7fb;color:#1d2433}header{background:#1d2b4f;color:#fff;padding:20px 32px}
header h1{margin:0 0 4px;font-size:22px}header p{margin:0;opacity:.85}main{padding:16px 32px 40px}
section{background:#fff;border:1px solid #e1e5ee;border-radius:8px;padding:16px 20px;margin:16px 0}
h2{font-size:16px;margin:0 0 12px}.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 150px;background:#f1f4fa;border-radius:6px;padding:10px 14px}
.card .k{font-size:12px;color:#5b6477;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600}.good{color:#1c7c3c}.bad{color:#b3261e}.muted{color:#6b7385}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eceff5;
vertical-align:top}th{font-size:12px;color:#5b6477;text-transform:uppercase}th.n{text-align:right}td.n{text-align:right;
font-variant-numeric:tabular-nums}.charts{display:flex;flex-wrap:wrap;gap:24px}.chart .lbl{font-size:12px;
fill:#1d2433}.chart .val{font-size:12px;fill:#3c4558}.legend span{display:inline-block;width:12px;height:12px;
vertical-align:middle;margin:0 4px 0 12px;border-radius:2px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px}
figure{margin:0;background:#f1f4fa;border-radius:6px;padding:8px;text-align:center}
figure img{width:100%;height:150px;object-fit:contain;display:block;background:#fff;border-radius:4px}
.nothumb{height:150px;display:flex;align-items:center;justify-content:center;background:#e4e8f1;color:#6b7385;
border-radius:4px}figcaption{font-size:12px;margin-top:6px;word-break:break-all}
.tag{display:inline-block;padding:0 6px;border-radius:8px;font-size:11px;background:#dfe8fb;color:#1d4fa8}
.tag.cached{background:#dff3e6;color:#1c7c3c}.reason{font-family:ui-monospace,Menlo,monospace;font-size:12px}
"""

# Marks <body data-thumbs="all|missing:N" data-thumb-count="N"> once every image has settled.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img.thumb"));
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute("data-thumb-count", String(imgs.length));
  document.body.setAttribute("data-thumbs", bad.length ? "missing:" + bad.length : "all");
});
"""

#: item states shown in the counts table, in this order
_STATES = ("succeeded", "cached", "failed", "blocked", "cancelled", "pending", "queued", "running")


def write_html(path: Path, page: JobPage) -> int:
    """Write the page; returns its size in bytes."""
    text = render_html(page)
    data = text.encode("utf-8")
    path.write_bytes(data)
    return len(data)


def render_html(page: JobPage) -> str:
    s = page.summary
    period = ""
    if page.since or page.until:
        period = (f" · ledger from {page.since.isoformat() if page.since else 'the start'}"
                  f" to {page.until.isoformat() if page.until else 'now'}")
    body = [
        f'<header><h1>Job report: {escape(s.name)}</h1><p>job <span data-testid="job-id">{s.job_id}</span> · '
        f'state <b data-testid="job-state">{escape(s.state)}</b> · generated '
        f'{page.generated_at.strftime("%Y-%m-%d %H:%M:%S")} UTC{escape(period)}</p></header><main>',
        _cards(page), _counts(s.counts), _spooled(page), _review(s.review), _charts(page), _stability(page),
        _failures(page),
        _gallery(page),
        '<p class="muted">Numbers are exact SQL totals over the whole job (the same as '
        f'<code>pipeline report {escape(s.name)} --json</code>); the gallery and the list of failed items '
        "show the first items only.</p></main>",
    ]
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(s.name)} · job report</title><style>{_CSS}</style></head><body>"
            + "".join(body) + f"<script>{_SCRIPT}</script></body></html>")


def _value(testid: str, exact: Any, shown: str, cls: str = "v") -> str:
    return (f'<div class="{cls}" data-testid="{testid}" data-value="{escape(str(exact))}">'
            f"{escape(shown)}</div>")


def _card(label: str, inner: str) -> str:
    return f'<div class="card"><div class="k">{escape(label)}</div>{inner}</div>'


def _cards(page: JobPage) -> str:
    t = page.summary.totals
    rate = page.cache_hit_rate
    saved_pct = f" ({t.saved_usd / t.list_cost_usd * 100:.0f}%)" if t.list_cost_usd > 0 else ""
    c = page.summary.counts
    failed = c.get("failed", 0) + c.get("blocked", 0)
    return "<section><h2>Totals</h2><div class=\"cards\">" + "".join([
        _card("images generated", _value("total-images", t.images, f"{t.images:,}")),
        _card("cache hits", _value("total-cache-hits", t.cache_hits, f"{t.cache_hits:,}")),
        _card("cache hit rate", _value("cache-hit-rate", "" if rate is None else round(rate, 4), pct(rate))),
        _card("cost", _value("total-cost", show(t.cost_usd), dollars(t.cost_usd))),
        _card("official list price", _value("total-list-cost", show(t.list_cost_usd), dollars(t.list_cost_usd))),
        _card("saved", _value("total-saved", show(t.saved_usd), dollars(t.saved_usd) + saved_pct, "v good")),
        _card("failed + blocked", _value("total-failed", failed, f"{failed:,}", "v bad" if failed else "v")),
    ]) + "</div></section>"


def _counts(counts: dict[str, int]) -> str:
    cells = "".join(f'<th class="n">{escape(k)}</th>' for k in _STATES)
    vals = "".join(f'<td class="n" data-testid="count-{k}" data-value="{counts.get(k, 0)}">{counts.get(k, 0):,}</td>'
                   for k in _STATES)
    return (f"<section><h2>Items by state ({sum(counts.values()):,} items)</h2>"
            f"<table><tr>{cells}</tr><tr>{vals}</tr></table></section>")


def _spooled(page: JobPage) -> str:
    """Paid images that wait in a spool of this host (not stored yet): counted apart from the stored ones."""
    s = page.summary
    if not s.spooled_items:
        return ""
    keys = ", ".join(escape(k) for k in s.spooled_keys) + (", ..." if s.spooled_items > len(s.spooled_keys) else "")
    return (f'<section><h2>Paid, not stored yet (<span data-testid="spooled" data-value="{s.spooled_items}">'
            f"{s.spooled_items:,}</span>)</h2><p class=\"bad\">The storage refused these images (full or unreachable); "
            "they wait in this host's spool (.pipeline/spool) and are uploaded when it takes them again. Their links "
            f"below lead nowhere until then.</p><p class=\"reason\">{keys}</p></section>")


def _review(review: dict[str, int]) -> str:
    """Review counts (`pipeline review`, the review app): the same numbers as `report --json`'s "review"."""
    cells = "".join(f'<th class="n">{k}</th>' for k in ("approved", "rejected", "unreviewed"))
    vals = "".join(f'<td class="n" data-testid="review-{k}" data-value="{review.get(k, 0)}">{review.get(k, 0):,}</td>'
                   for k in ("approved", "rejected", "unreviewed"))
    return f"<section><h2>Review</h2><table><tr>{cells}</tr><tr>{vals}</tr></table></section>"


def _charts(page: JobPage) -> str:
    days = [(k, v.cost_usd, v.list_cost_usd) for k, v in page.by_day.items()]
    provs = [(k, v.cost_usd, v.list_cost_usd) for k, v in page.summary.by_provider.items()]
    legend = (f'<p class="legend muted"><span style="background:{COST_COLOUR}"></span>cost'
              f'<span style="background:{LIST_COLOUR}"></span>official list price (the pale part is saved)</p>')
    return ("<section><h2>Cost</h2>" + legend + '<div class="charts">'
            f'<div><h3>by day</h3>{cost_bars(days, title="cost by day")}</div>'
            f'<div><h3>by provider</h3>{cost_bars(provs, title="cost by provider")}</div>'
            "</div></section>")


def _stability(page: JobPage) -> str:
    if not page.stability:
        return '<section><h2>Provider stability</h2><p class="muted">No provider calls recorded.</p></section>'
    rows = "".join(
        f'<tr data-testid="stability-{escape(name)}"><td>{escape(name)}</td><td class="n">{st.requests:,}</td>'
        f'<td class="n">{pct(st.success_rate)}</td><td class="n">{secs(st.p50_ms)}</td>'
        f'<td class="n">{secs(st.p95_ms)}</td><td class="n">{secs(st.max_ms)}</td><td class="n">{st.http_429:,}</td>'
        f'<td class="n">{pct(st.rate_429)}</td><td>{escape(error_classes(st.error_classes))}</td></tr>'
        for name, st in page.stability.items())
    head = "".join(f'<th class="n">{h}</th>' for h in ("requests", "success", "p50", "p95", "max", "429s", "429 rate"))
    return ("<section><h2>Provider stability (this job's calls)</h2><table><tr><th>provider</th>" + head +
            "<th>errors</th></tr>"
            f"{rows}</table><p class=\"muted\">Latency of successful calls; requests are finished calls "
            "(retries included).</p></section>")


def _failures(page: JobPage) -> str:
    if page.failed_total == 0:
        return '<section><h2>Failed and blocked items</h2><p class="good">None.</p></section>'
    reasons = "".join(f'<tr><td class="n">{n:,}</td><td class="reason">{escape(r)}</td></tr>'
                      for r, n in page.reasons)
    items = "".join(f'<tr><td>{escape(f.key)}</td><td>{escape(f.state)}</td><td>{escape(f.provider or "-")}</td>'
                    f'<td class="n">{f.attempts}</td><td class="reason">{escape(f.reason)}</td></tr>'
                    for f in page.failed)
    more = (f'<p class="muted">Showing the first {len(page.failed):,} of {page.failed_total:,}.</p>'
            if page.failed_total > len(page.failed) else "")
    return (f"<section><h2>Failed and blocked items ({page.failed_total:,})</h2>"
            f"<h3>by reason</h3><table><tr><th>items</th><th>reason</th></tr>{reasons}</table>"
            f"<h3>items</h3><table><tr><th>item</th><th>state</th><th>provider</th><th>attempts</th><th>reason</th>"
            f"</tr>{items}</table>{more}</section>")


def _gallery(page: JobPage) -> str:
    if not page.gallery:
        return '<section><h2>Gallery</h2><p class="muted">No images yet.</p></section>'
    figures = "".join(_figure(g, page.thumbs.get(g.thumb_key) if g.thumb_key else None) for g in page.gallery)
    note = (f'<p class="muted">Showing the first {len(page.gallery):,} of {page.gallery_total:,} images.</p>'
            if page.gallery_total > len(page.gallery) else "")
    return (f"<section><h2>Gallery ({page.gallery_total:,} images)</h2>{note}"
            f'<div class="gallery">{figures}</div></section>')


def _figure(g: GalleryItem, thumb: bytes | None) -> str:
    if thumb is not None:
        uri = "data:image/jpeg;base64," + base64.b64encode(thumb).decode("ascii")
        pic = f'<img class="thumb" src="{uri}" alt="{escape(g.key)}" loading="eager">'
    else:
        pic = '<div class="nothumb">no thumbnail</div>'
    if g.stored_url:
        pic = f'<a href="{escape(g.stored_url)}" title="full image">{pic}</a>'
    badge = f'<span class="tag {escape(g.state)}">{escape(g.state)}</span>'
    return (f"<figure>{pic}<figcaption>{escape(g.key)}<br>{badge} {escape(g.provider or '')} "
            f"{escape(g.resolution)} · {dollars(g.cost_usd)}</figcaption></figure>")
