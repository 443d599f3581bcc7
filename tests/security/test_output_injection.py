"""Issue 13, classes 8 and 9: output that turns input into code.

8. Rich markup in stored text (item ids, tags, provider reasons, paths, a job reference typed by the user) is
   printed as written by `run`, `status`, `report` (all groupings), `report --html` and the error printer: no
   MarkupError, `[link=...]` not swallowed, an IPv6 URL keeps its brackets.
9. `report --csv` neutralises cells a spreadsheet would run as a formula (OWASP: a leading single quote for
   cells starting with =, +, -, @, tab or CR); plain numbers stay numbers.
Everything runs through the real CLI in subprocesses on an embedded job (the sandbox in-process).
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, update

from pipeline.db.models import Item
from pipeline.reports.csvsafe import safe_cell, safe_row
from tests.security.cli import run_cli

MARKUP = ["[/bold]", "[link=http://x]", "[red]", "[/]", "[bold red]x[/bold red]"]
HOSTILE_IDS = ["[red]", "[link=http:x]a", "[bold red]b"]  # '/' is refused in ids, the rest is allowed
HOSTILE_TAGS = ["[/bold]", "[link=http://x]", "=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1+1)", "＝1+1"]
REASON = "[/bold] blocked: see [link=http://x]https://[fe80::1]:8443/v1[/link] and [red]this[/red]"


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished embedded job with hostile ids and tags, one item failed by the provider (a blocked prompt)
    and one failure reason replaced by hostile text (as a provider could send it)."""
    d = tmp_path_factory.mktemp("markup")
    items = [{"id": i, "tags": HOSTILE_TAGS} for i in HOSTILE_IDS]
    items.append({"id": "[blocked]", "prompt": "refused [sandbox:block-prompt]", "tags": ["[/bold]"]})
    (d / "m.yaml").write_text(yaml.safe_dump({"job": "markup", "providers": ["sandbox"], "prompt": "photo {{ id }}",
                                              "items": items}))
    ran = run_cli(d, "run", "m.yaml", timeout=240)
    assert ran.rc == 1, ran.text  # the blocked prompt failed
    assert "Traceback" not in ran.text and "MarkupError" not in ran.text, ran.text
    assert "[blocked]" in ran.text  # the failed item's id, printed as written
    engine = create_engine(f"sqlite:///{d / '.pipeline' / 'pipeline.db'}")
    with engine.begin() as c:
        c.execute(update(Item).where(Item.key == "[blocked]").values(failure_reason=REASON))
    engine.dispose()
    return d


def _clean(text: str) -> None:
    assert "Traceback" not in text and "MarkupError" not in text, text


def test_status_prints_ids_and_reasons_as_written(job_dir: Path) -> None:
    ran = run_cli(job_dir, "status", "markup")
    assert ran.rc == 0, ran.text
    _clean(ran.text)
    assert "[blocked]: " + REASON in ran.text
    assert "https://[fe80::1]:8443/v1" in ran.text and "https:///" not in ran.text


@pytest.mark.parametrize("by", ["provider", "tag", "job", "day", "resolution"])
def test_report_prints_every_grouping_as_written(job_dir: Path, by: str) -> None:
    ran = run_cli(job_dir, "report", "markup", "--by", by)
    assert ran.rc == 0, ran.text
    _clean(ran.text)
    assert REASON in ran.text
    if by == "tag":
        for tag in HOSTILE_TAGS:
            assert tag in ran.text, tag


def test_report_without_job_prints_tags_as_written(job_dir: Path) -> None:
    ran = run_cli(job_dir, "report", "--by", "tag")
    assert ran.rc == 0 and all(tag in ran.text for tag in HOSTILE_TAGS), ran.text


def test_html_report_escapes_everything_and_its_path(job_dir: Path) -> None:
    out_dir = job_dir / "[red]reports[" / "]"
    out_dir.parent.mkdir(exist_ok=True)
    out_dir.mkdir(exist_ok=True)
    target = out_dir / "[link=http:x]r.html"
    ran = run_cli(job_dir, "report", "markup", "--html", str(target))
    assert ran.rc == 0, ran.text
    _clean(ran.text)
    assert f"wrote {target}" in ran.text
    page = target.read_text()
    assert html.escape(REASON) in page and "<link" not in page
    for key in HOSTILE_IDS:
        assert html.escape(key) in page


def test_error_printer_prints_the_input_as_written(job_dir: Path) -> None:
    ref = "[/bold][link=http://x]y[/link][red]"
    ran = run_cli(job_dir, "status", ref)
    assert ran.rc == 2, ran.text
    _clean(ran.text)
    assert ref in ran.text


def test_json_output_is_unchanged_by_escaping(job_dir: Path) -> None:
    import json

    ran = run_cli(job_dir, "status", "markup", "--json")
    data = json.loads(ran.out)
    assert {"item": "[blocked]", "reason": REASON} in data["failures"]


def test_report_csv_neutralises_formula_cells(job_dir: Path) -> None:
    target = job_dir / "tags.csv"
    ran = run_cli(job_dir, "report", "markup", "--by", "tag", "--csv", str(target))
    assert ran.rc == 0, ran.text
    with target.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header[0] == "tag"
    tags = {r[0] for r in body}
    for tag in HOSTILE_TAGS:
        expected = "'" + tag if tag[0] in "=+-@＝" else tag
        assert expected in tags, (tag, tags)
    for row in body:
        assert row[0][0] not in "=+-@\t\r＝", row
        assert all(c == "" or c[0] != "'" for c in row[1:]), row  # numbers are left as numbers


@pytest.mark.parametrize(("value", "expected"), [
    ("=1+1", "'=1+1"), ("+1+1", "'+1+1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
    ("\rx", "'\rx"), ("\nx", "'\nx"), ("＝1", "'＝1"), ("＋1", "'＋1"), ("plain", "plain"), ("", ""),
    ("-0.05", "-0.05"), ("+3", "+3"), ("-1e5", "-1e5"), ("'=already", "'=already"), (7, 7),
])
def test_safe_cell(value: object, expected: object) -> None:
    assert safe_cell(value) == expected
    assert safe_row([value, 1]) == [expected, 1]
