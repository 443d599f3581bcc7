"""Issue 13, class 3: what Postgres cannot store (money beyond Numeric(14, 6), NUL characters, lone surrogates) is
refused in the manifest layer, with the same message and exit code on Postgres and on SQLite, and nothing is
written to either. Provider text that reaches the database anyway (failure reasons, attempt details) is stored
the same on both: NUL replaced, keys cut out, length bounded (db.models.BoundedText)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.db.models import Attempt, Item, Job
from pipeline.redact import MAX_DETAIL_CHARS, MAX_REASON_CHARS, install

HEAD = "job: limits\nproviders: [sandbox]\nprompt: 'Photo of {{ title }}'\n"
KEY = "sk-DBLIMITS-0123456789abcdefghijklmnop"

MANIFESTS = {
    "max-usd-overflow": (HEAD + "budget: {max_usd: 123456789}\nitems: [{id: a, title: x}]\n", {},
                         ["m.yaml:4", "budget.max_usd", "largest amount stored"]),
    "max-usd-seven-places": (HEAD + "budget: {max_usd: 0.0000001}\nitems: [{id: a, title: x}]\n", {},
                             ["m.yaml:4", "6 decimal places"]),
    "max-price-overflow": (HEAD + "max_price: 100000000\nitems: [{id: a, title: x}]\n", {},
                           ["m.yaml:4", "max_price"]),
    "nul-yaml": (HEAD + 'items:\n  - {id: a, title: "x\\0y"}\n', {}, ["m.yaml:5 (item a)", "title", "NUL"]),
    "nul-yaml-nested": (HEAD + 'items:\n  - {id: a, title: x, extra: {deep: ["ok", "x\\0"]}}\n', {},
                        ["m.yaml:5 (item a)", "extra.deep.1", "NUL"]),
    "nul-yaml-field-name": (HEAD + 'items:\n  - {id: a, title: x, "b\\0ad": 1}\n', {}, ["(item a)", "NUL"]),
    "nul-csv": (HEAD + "items_from: items.csv\n", {"items.csv": "id,title\nok,fine\na,x\x00y\n"},
                ["items.csv:3 (item a)", "NUL"]),
    "nul-csv-header": (HEAD + "items_from: items.csv\n", {"items.csv": "id,ti\x00tle\na,x\n"}, ["items.csv", "NUL"]),
    "nul-jsonl": (HEAD + "items_from: items.jsonl\n", {"items.jsonl": '{"id": "a", "title": "x\\u0000"}\n'},
                  ["items.jsonl:1 (item a)", "NUL"]),
    "surrogate-jsonl": (HEAD + "items_from: items.jsonl\n", {"items.jsonl": '{"id": "a", "title": "\\udfff"}\n'},
                        ["items.jsonl:1 (item a)", "surrogate"]),
    "nul-rendered-prompt": (HEAD.replace("'Photo of {{ title }}'", '"{{ \'\\\\x00\' }} {{ title }}"')
                            + "items: [{id: a, title: x}]\n", {}, ["(item a)", "NUL"]),
}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'p.db'}"
    return str(request.getfixturevalue("pg_url"))


def _config(tmp_path: Path, url: str) -> Path:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({"database_url": url, "storage_url": f"file://{tmp_path / 'out'}"}))
    res = CliRunner().invoke(app, ["db", "upgrade", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    return cfg


def _counts(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return (c.scalar(select(func.count()).select_from(Job)) or 0,
                    c.scalar(select(func.count()).select_from(Item)) or 0)
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_refused_the_same_on_both_databases_nothing_written(name: str, database: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    body, files, expect = MANIFESTS[name]
    cfg = _config(tmp_path, database)
    (tmp_path / "m.yaml").write_text(body, encoding="utf-8")
    for rel, content in files.items():
        (tmp_path / rel).write_text(content, encoding="utf-8", newline="")
    monkeypatch.chdir(tmp_path)
    for command in ("validate", "submit", "run"):
        res = CliRunner().invoke(app, [command, "m.yaml", "--config", str(cfg)])
        assert res.exit_code == 2, (command, res.output, res.exception)
        flat = " ".join(res.output.split())
        assert "Traceback" not in flat and all(part in flat for part in expect), (command, res.output)
    assert _counts(database) == (0, 0)


def test_the_largest_storable_amount_is_stored_exactly_on_both(database: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(tmp_path, database)
    (tmp_path / "m.yaml").write_text(HEAD + "budget: {max_usd: '99999999.999999'}\nitems: [{id: a, title: x}]\n")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["submit", "m.yaml", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    engine = create_engine(database)
    try:
        with Session(engine) as s:
            assert s.scalar(select(Job.max_usd)) == Decimal("99999999.999999")
    finally:
        engine.dispose()


def test_provider_text_is_stored_alike_nul_free_redacted_and_bounded(database: str, tmp_path: Path) -> None:
    """A reason with NUL (Postgres refuses it in text), a partial key and 100 KB of text: stored on both."""
    _config(tmp_path, database)
    install([KEY])
    try:
        reason = "blocked\x00 by " + KEY[:12] + "... " + KEY.upper() + " " + "r" * 100_000
        engine = create_engine(database)
        now = datetime(2026, 1, 1)
        with Session(engine) as s, s.begin():
            job = Job(name="t", state="active", providers=["sandbox"], manifest={}, created_at=now, updated_at=now)
            s.add(job)
            s.flush()
            item = Item(job_id=job.id, key="a", prompt="p", resolution="1K", aspect_ratio="1:1", output_format="png",
                        output_key="t/a.png", cache_key="c" * 64, spec_hash="h" * 64, next_attempt_at=now,
                        created_at=now, updated_at=now, failure_reason=reason)
            s.add(item)
            s.flush()
            s.add(Attempt(item_id=item.id, job_id=job.id, provider="sandbox", started_at=now, error_detail=reason))
        with engine.connect() as c:  # what the database holds, read raw (no type processing on the way out)
            stored = c.execute(text("SELECT failure_reason FROM items")).scalar_one()
            detail = c.execute(text("SELECT error_detail FROM attempts")).scalar_one()
        engine.dispose()
    finally:
        install([])
    for value, limit in ((stored, MAX_REASON_CHARS), (detail, MAX_DETAIL_CHARS)):
        assert len(value) <= limit and value.endswith("...")
        assert "\x00" not in value and "\ufffd" in value
        assert KEY[:8] not in value and KEY[:8].upper() not in value and "[redacted]" in value
        assert value.startswith("blocked")
