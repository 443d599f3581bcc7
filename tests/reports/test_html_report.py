"""`pipeline report JOB --html`: one self-contained page over a real job (sandbox over HTTP), opened in headless
Chromium: not blank, every thumbnail loads, and the totals on the page equal `pipeline report JOB --json`."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.db.models import Job
from pipeline.reports.html import render_html
from pipeline.reports.jobpage import gather
from pipeline.sandbox.server import SandboxServer
from tests.reports.conftest import chromium_args, write_config
from tests.reports.rows import add_items, add_job, migrated

MANIFEST = """
job: html-report
providers: [sandbox]
defaults: {resolution: 1K, aspect_ratio: "1:1", format: png}
output: {key: "gallery/{{ id }}.png"}
prompt: "Product photo of {{ title }} on marble"
tags: [catalogue]
items:
  - {id: a1, title: a red kettle, tags: [kitchen]}
  - {id: a2, title: a blue kettle, tags: [kitchen, sale]}
  - {id: a3, title: a red kettle}
  - {id: a4, title: "a desk lamp [sandbox:503x1]", resolution: 2K}
  - {id: a5, title: "a forbidden thing [sandbox:block-prompt]"}
  - {id: a6, title: a green chair, aspect_ratio: "16:9"}
"""


class _TestIds(HTMLParser):
    """data-testid -> data-value, and every src/href, of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.urls: list[str] = []
        self.body: dict[str, str] = {}
        self.thumbs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "data-testid" in a and "data-value" in a:
            self.values[a["data-testid"]] = a["data-value"]
        self.urls += [a[k] for k in ("src", "href") if k in a]
        if tag == "body":
            self.body = a
        if tag == "img" and "thumb" in a.get("class", ""):
            self.thumbs += 1


def _parse(text: str) -> _TestIds:
    p = _TestIds()
    p.feed(text)
    return p


def _invoke(args: list[str]) -> Any:
    res = CliRunner().invoke(app, args)
    return res


@pytest.fixture
def finished_job(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> Path:
    cfg = write_config(tmp_path, db_url, sandbox.url)
    manifest = tmp_path / "job.yaml"
    manifest.write_text(MANIFEST)
    res = _invoke(["run", str(manifest), "--config", str(cfg), "--json"])
    assert res.exit_code == 1, res.output  # one item is blocked by the provider's safety filter
    return cfg


def _report_json(cfg: Path) -> dict[str, Any]:
    res = _invoke(["report", "html-report", "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    return dict(json.loads(res.stdout))


def _assert_totals(values: dict[str, str], obj: dict[str, Any]) -> None:
    assert values["total-cost"] == obj["cost_usd"]
    assert values["total-list-cost"] == obj["list_cost_usd"]
    assert values["total-saved"] == obj["saved_usd"]
    assert int(values["total-images"]) == obj["images"]
    assert int(values["total-cache-hits"]) == obj["cache_hits"]
    assert float(values["cache-hit-rate"]) == obj["cache_hit_rate"]
    for state, n in obj["counts"].items():
        assert int(values[f"count-{state}"]) == n, state


def test_html_totals_equal_json_and_page_is_self_contained(finished_job: Path, tmp_path: Path) -> None:
    obj = _report_json(finished_job)
    assert obj["counts"]["succeeded"] == 4 and obj["counts"]["cached"] == 1 and obj["counts"]["failed"] == 1
    page = tmp_path / "report.html"
    res = _invoke(["report", "html-report", "--config", str(finished_job), "--html", str(page)])
    assert res.exit_code == 0, res.output
    text = page.read_text()
    parsed = _parse(text)
    _assert_totals(parsed.values, obj)
    assert parsed.thumbs == 5
    # nothing is fetched from anywhere: images are data: URIs, links point at the stored files
    for url in parsed.urls:
        assert url.startswith(("data:image/jpeg;base64,", "file://")), url[:80]
    assert "<link" not in text and "@import" not in text and not re.search(r"url\(\s*['\"]?http", text)
    assert "<svg" in text and "cost by day" in text and "cost by provider" in text
    assert "block" in text.lower()  # the failed item's reason is shown
    assert 'data-testid="stability-sandbox"' in text and "unavailable 1" in text


@pytest.mark.timeout(900)  # the chromium fixture may install the package first
def test_report_in_headless_chromium(finished_job: Path, tmp_path: Path, chromium: str) -> None:
    obj = _report_json(finished_job)
    page = tmp_path / "report.html"
    assert _invoke(["report", "html-report", "--config", str(finished_job), "--html", str(page)]).exit_code == 0
    shot = tmp_path / "shot.png"
    base = chromium_args(chromium, tmp_path / "chromium-profile")
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1400,3000", f"file://{page}"],
                   capture_output=True, timeout=90, check=True)
    with Image.open(shot) as im:
        assert im.size == (1400, 3000)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 200, "screenshot looks blank"
        top = max(n for n, _ in colours)
        assert top < 0.95 * im.size[0] * im.size[1], "screenshot is almost one colour"
    dom = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", f"file://{page}"],
                         capture_output=True, text=True, timeout=90, check=True).stdout
    parsed = _parse(dom)
    assert parsed.body.get("data-thumbs") == "all", parsed.body
    assert parsed.body.get("data-thumb-count") == "5"
    _assert_totals(parsed.values, obj)


def test_report_groupings_and_csv(finished_job: Path, tmp_path: Path) -> None:
    res = _invoke(["report", "html-report", "--config", str(finished_job), "--by", "tag", "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["by"] == "tag"
    assert set(obj["rows"]) == {"catalogue", "kitchen", "sale"}
    rows = obj["rows"]
    # a1 and a3 share a prompt: one of them is the call, the other the cache hit (either way round)
    assert rows["kitchen"]["images"] + rows["kitchen"]["cache_hits"] == 2
    assert rows["catalogue"]["images"] + rows["catalogue"]["cache_hits"] == 3
    assert rows["sale"] == {**rows["sale"], "images": 1, "cache_hits": 0}
    out = tmp_path / "by-day.csv"
    res = _invoke(["report", "--config", str(finished_job), "--by", "day", "--csv", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert lines[0] == "day,images,cache_hits,cost_usd,list_cost_usd,saved_usd"
    assert len(lines) == 2 and lines[1].split(",")[1:3] == ["4", "1"]
    res = _invoke(["report", "--config", str(finished_job), "--by", "tag"])
    assert res.exit_code == 0 and "kitchen" in res.stdout and "total" in res.stdout
    future = _invoke(["report", "--config", str(finished_job), "--since", "2999-01-01", "--json"])
    assert json.loads(future.stdout)["cost_usd"] == "0.00"
    for bad in (["--by", "colour"], ["--html", str(tmp_path / "x.html")], ["--until", "someday"]):
        res = _invoke(["report", "--config", str(finished_job), *bad])
        assert res.exit_code == 2 and "error" in res.output, bad
    assert not (tmp_path / "x.html").exists()


def test_page_escapes_what_users_wrote(tmp_path: Path) -> None:
    """Item keys and failure reasons come from manifests and providers: they are text, never markup."""
    now = datetime(2026, 3, 10, 12, 0)
    with migrated(f"sqlite:///{tmp_path / 'db.sqlite'}") as sessions:
        job_id = add_job(sessions, "esc", now)
        add_items(sessions, job_id, 2, now, lambda i: {
            "state": "failed", "failure_reason": "<script>alert(1)</script> & <img src=x>"} if i == 0 else {
            "key": 'it"><b>x', "stored_url": 'file:///o/a"onmouseover="x.png'})
        with sessions() as s:
            job = s.get_one(Job, job_id)
            text = render_html(gather(s, job, now))
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x&gt;" in text
    assert 'it&quot;&gt;&lt;b&gt;x' in text and 'a&quot;onmouseover=&quot;x.png' in text
    assert text.count("<script>") == 1  # only the page's own thumbnail check
