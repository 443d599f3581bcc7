"""The review loop from the command line, on a real job (sandbox over HTTP, SQLite and Postgres): review with
notes, bad input refused with nothing written, review counts in status/report --json and the HTML report,
an edited prompt, `rerun --rejected` (only the rejected item paid again, its old image kept as history, the
edit changing its cache key), and `export --approved` as JSON, CSV and zip."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

from sqlalchemy import select

from pipeline.db.models import Item, ItemOutput, ItemReview, LedgerEntry
from pipeline.manifest.expand import cache_key_for
from pipeline.presets import MODEL
from pipeline.sandbox.server import SandboxServer
from tests.review.helpers import cli, sessions_for, write_config, write_manifest

ITEMS = [{"id": "a", "title": "a red kettle", "tags": ["kitchen"]}, {"id": "b", "title": "a blue mug"},
         {"id": "c", "title": "a desk lamp"}, {"id": "bad", "title": "nope [sandbox:block-prompt]"}]


def _review_rows(db_url: str) -> dict[str, tuple[str, str | None, str | None]]:
    with sessions_for(db_url) as sessions, sessions() as s:
        return {k: (st, n, p) for k, st, n, p in s.execute(
            select(Item.key, ItemReview.state, ItemReview.note, ItemReview.prompt_override)
            .join(ItemReview, ItemReview.item_id == Item.id))}


def test_review_rerun_rejected_and_export(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    cfg = write_config(tmp_path, db_url, sandbox.url)
    code, _, out = cli("run", write_manifest(tmp_path, "cat", ITEMS), "--config", cfg)
    assert code == 1, out  # "bad" is blocked by the provider
    assert sandbox.ledger()["billed_images"] == 3

    # bad input: exit 2, and nothing is written
    for args, words in [(["--approve", "zz"], "no such item"), (["--approve", "bad"], "no image to approve"),
                        (["--approve", "a", "--reject", "a"], "named by both"), ([], "give --approve"),
                        (["--prompt", "a", "   "], "prompt is empty"),
                        (["--prompt", "a", "x", "--approve", "b"], "edits one item"),
                        (["--reject", "a", "--note", "bad\x00note"], "control character")]:
        code, _, out = cli("review", "cat", *args, "--config", cfg)
        assert code == 2 and words in out, (args, out)
    code, _, out = cli("review", "nojob", "--approve", "a", "--config", cfg)
    assert code == 2 and "no such job" in out
    assert _review_rows(db_url) == {}

    code, _, out = cli("review", "cat", "--approve", "a,b", "--config", cfg)
    assert code == 0 and "2 approved" in out, out
    code, _, out = cli("review", "cat", "--reject", "c,bad", "--note", "too dark", "--config", cfg)
    assert code == 0 and "2 rejected" in out, out
    code, _, out = cli("review", "cat", "--prompt", "c", "A bright desk lamp on oak, morning light", "--config", cfg)
    assert code == 0 and "prompt of c saved" in out, out
    rows = _review_rows(db_url)
    assert rows["a"] == ("approved", None, None) and rows["c"][:2] == ("rejected", "too dark")
    assert rows["c"][2] == "A bright desk lamp on oak, morning light"

    code, stdout, _ = cli("status", "cat", "--json", "--config", cfg)
    assert json.loads(stdout)["review"] == {"approved": 2, "rejected": 2, "unreviewed": 0}
    code, stdout, _ = cli("report", "cat", "--json", "--config", cfg)
    assert json.loads(stdout)["review"] == {"approved": 2, "rejected": 2, "unreviewed": 0}
    page = tmp_path / "report.html"
    assert cli("report", "cat", "--html", page, "--config", cfg)[0] == 0
    html = page.read_text()
    assert 'data-testid="review-approved" data-value="2"' in html
    assert 'data-testid="review-rejected" data-value="2"' in html

    with sessions_for(db_url) as sessions, sessions() as s:
        before = {i.key: i for i in s.scalars(select(Item))}
    old_c = (tmp_path / "out" / before["c"].output_key).read_bytes()

    code, _, out = cli("rerun", "cat", "--rejected", "--config", cfg)
    assert "2 rejected items back to pending" in out, out
    assert "old images kept as history: 1; with an edited prompt: 1" in out, out
    assert code == 1  # "bad" is blocked again by the provider's filter
    assert sandbox.ledger()["billed_images"] == 4  # only c was paid again

    with sessions_for(db_url) as sessions, sessions() as s:
        after = {i.key: i for i in s.scalars(select(Item))}
        history = list(s.scalars(select(ItemOutput)))
        images = [k for k, in s.execute(select(Item.key).join(LedgerEntry, LedgerEntry.item_id == Item.id)
                                        .where(LedgerEntry.kind == "image"))]
    c = after["c"]
    assert c.state == "succeeded" and c.prompt == "A bright desk lamp on oak, morning light" and not c.force
    assert c.cache_key == cache_key_for(model=MODEL, prompt=c.prompt, resolution="1K", aspect_ratio="1:1",
                                        output_format="png", reference_sha256s=[])
    assert c.cache_key != before["c"].cache_key
    assert sorted(images) == ["a", "b", "c", "c"]  # a and b were not paid again
    assert [(h.item_id, h.seq, h.prompt, h.review_state, h.note) for h in history] == [
        (c.id, 1, "Product photo of a desk lamp", "rejected", "too dark")]
    assert history[0].object_key == f"_history/{c.job_id}/{c.id}/1.png"
    assert (tmp_path / "out" / history[0].object_key).read_bytes() == old_c  # the old image, kept
    assert (tmp_path / "out" / c.output_key).read_bytes() != old_c  # the new one, made from the edited prompt
    assert history[0].thumb_key and (tmp_path / "out" / history[0].thumb_key).is_file()
    rows = _review_rows(db_url)
    assert rows["c"] == ("unreviewed", None, "A bright desk lamp on oak, morning light")
    assert rows["bad"][0] == "unreviewed" and rows["a"][0] == "approved"

    code, _, out = cli("rerun", "cat", "--rejected", "--config", cfg)
    assert code == 0 and "0 rejected items" in out
    code, _, out = cli("rerun", "cat", "--rejected", "--failed", "--config", cfg)
    assert code == 2 and "goes alone" in out

    code, stdout, _ = cli("export", "cat", "--approved", "--config", cfg)
    assert code == 0
    manifest = json.loads(stdout)
    assert manifest["count"] == 2 and [i["id"] for i in manifest["items"]] == ["a", "b"]
    assert manifest["items"][0]["output_key"] == after["a"].output_key
    assert manifest["items"][0]["url"] == after["a"].stored_url
    code, _, out = cli("export", "cat", "--config", cfg)
    assert code == 2 and "--approved" in out
    csv_file, zip_file = tmp_path / "approved.csv", tmp_path / "approved.zip"
    code, _, out = cli("export", "cat", "--approved", "--csv", csv_file, "--zip", zip_file, "--config", cfg)
    assert code == 0, out
    lines = list(csv.reader(io.StringIO(csv_file.read_text())))
    assert lines[0][:3] == ["id", "output_key", "url"] and [r[0] for r in lines[1:]] == ["a", "b"]
    with zipfile.ZipFile(zip_file) as zf:
        names = sorted(zf.namelist())
        assert names == sorted(["manifest.json", "manifest.csv", f"images/{after['a'].output_key}",
                                f"images/{after['b'].output_key}"])
        assert zf.read(f"images/{after['a'].output_key}") == (tmp_path / "out" / after["a"].output_key).read_bytes()
        assert json.loads(zf.read("manifest.json"))["count"] == 2
    code, _, out = cli("export", "cat", "--approved", "--zip", tmp_path / "nodir" / "x.zip", "--config", cfg)
    assert code == 2 and not (tmp_path / "nodir").exists()


def test_rerun_rejected_bypasses_the_cache_for_rejected_items_only(tmp_path: Path, sandbox: SandboxServer) -> None:
    """Two items with one prompt: one paid, one answered by the cache. Rejecting the cached one and regenerating
    it pays for a new image even though the cache holds one; the other item is untouched."""
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(tmp_path, db_url, sandbox.url, worker={"concurrency": 1, "lease_s": 10})
    items = [{"id": "p1", "title": "a teapot"}, {"id": "p2", "title": "a teapot"}]
    assert cli("run", write_manifest(tmp_path, "twins", items), "--config", cfg)[0] == 0
    assert sandbox.ledger()["billed_images"] == 1
    with sessions_for(db_url) as sessions, sessions() as s:
        states = dict(s.execute(select(Item.key, Item.state)).tuples().all())
    cached = next(k for k, st in states.items() if st == "cached")
    paid = next(k for k in states if k != cached)
    assert cli("review", "twins", "--reject", cached, "--config", cfg)[0] == 0
    code, _, out = cli("rerun", "twins", "--rejected", "--config", cfg)
    assert code == 0, out
    assert sandbox.ledger()["billed_images"] == 2  # the cache was bypassed for the rejected item
    with sessions_for(db_url) as sessions, sessions() as s:
        items_now = {i.key: i for i in s.scalars(select(Item))}
        kinds = sorted((k, kind) for k, kind in s.execute(
            select(Item.key, LedgerEntry.kind).join(Item, Item.id == LedgerEntry.item_id)))
        kept = list(s.scalars(select(ItemOutput)))
    assert items_now[cached].state == "succeeded" and items_now[paid].state == "succeeded"
    assert kinds == sorted([(paid, "image"), (cached, "cache_hit"), (cached, "image")])
    assert [(h.item_id, h.state) for h in kept] == [(items_now[cached].id, "cached")]
