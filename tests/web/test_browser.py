"""The review loop in a real browser (Debian's Chromium driven by Playwright): a job run on the sandbox, its page
opened, two images rejected with the keyboard (j, r, j, r), one prompt edited, "Regenerate rejected" clicked,
and both items seen coming back as new images with the old ones in their history. Screenshots are kept in the
test's directory and in .pipeline/screenshots/ (UPDATE_DOCS_SCREENSHOT=1 also refreshes the README's)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline.db.models import Item, ItemOutput, LedgerEntry
from pipeline.sandbox.server import SandboxServer, start_sandbox
from tests.review.helpers import cli, sessions_for, write_config, write_manifest
from tests.web.conftest import CHROMIUM_ARGS, Job, run_job, serving

ROOT = Path(__file__).resolve().parents[2]
KEPT = ROOT / ".pipeline" / "screenshots"
DOCS_SHOT = ROOT / "docs" / "review-job-page.png"
ITEMS = [
    {"id": "sku-101", "title": "a copper kettle on a marble counter", "tags": ["kitchen"]},
    {"id": "sku-102", "title": "a ceramic mug with a blue glaze", "tags": ["kitchen", "sale"]},
    {"id": "sku-103", "title": "a glass vase with dried flowers", "tags": ["living"]},
    {"id": "sku-104", "title": "a walnut desk lamp", "tags": ["office"], "resolution": "2K"},
    {"id": "sku-105", "title": "a linen cushion [sandbox:block-prompt]", "tags": ["living"]},
    {"id": "sku-106", "title": "a wool throw in mustard yellow", "tags": ["living", "sale"]},
]
NEW_PROMPT = "A tall clear glass vase with fresh white tulips, soft studio light, pale grey backdrop"


def _loaded(page: object, selector: str) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        "s => { const i = document.querySelector(s); return !!i && i.complete && i.naturalWidth > 0; }",
        arg=selector, timeout=30_000)


@pytest.mark.timeout(900)  # the chromium fixture may install the package first
def test_reject_edit_regenerate_in_chromium(tmp_path: Path, sandbox: SandboxServer, chromium: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    job = run_job(tmp_path, sandbox, ITEMS, name="spring-catalogue")
    assert sandbox.ledger()["billed_images"] == 5
    with sessions_for(job.db_url) as sessions, sessions() as s:
        job_id = s.scalar(select(Item.job_id))
    with serving(job.settings(), worker=True) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
            page.goto(f"{url}/jobs/{job_id}")

            def card(key: str):  # type: ignore[no-untyped-def]
                return page.locator(f'article.card[data-item="{key}"]')

            old_src = {k: card(k).locator("img.current").get_attribute("src") for k in ("sku-102", "sku-103")}
            # reject two images with the keyboard: j (first card), j (second), r; j (third), r
            page.keyboard.press("j")
            expect(card("sku-101")).to_have_class(re.compile(r"\bcurrent\b"))
            page.keyboard.press("j")
            expect(card("sku-102")).to_have_class(re.compile(r"\bcurrent\b"))
            page.keyboard.press("r")
            expect(card("sku-102")).to_have_attribute("data-review", "rejected")
            expect(card("sku-102")).to_have_class(re.compile(r"\bcurrent\b"))  # focus survives the refresh
            page.keyboard.press("j")
            expect(card("sku-103")).to_have_class(re.compile(r"\bcurrent\b"))
            page.keyboard.press("r")
            expect(card("sku-103")).to_have_attribute("data-review", "rejected")
            expect(page.get_by_test_id("review-counts")).to_contain_text("rejected 2", timeout=10_000)
            # approve one with a, to see the other verdict on the page too
            page.keyboard.press("k")
            page.keyboard.press("k")
            expect(card("sku-101")).to_have_class(re.compile(r"\bcurrent\b"))
            page.keyboard.press("a")
            expect(card("sku-101")).to_have_attribute("data-review", "approved")

            # edit one prompt
            card("sku-103").locator("details.edit summary").click()
            card("sku-103").locator("textarea").fill(NEW_PROMPT)
            card("sku-103").get_by_role("button", name="Save prompt").click()
            expect(card("sku-103").get_by_test_id("override")).to_contain_text("A tall clear glass vase")
            page.screenshot(path=str(tmp_path / "1-rejected.png"), full_page=True)

            # regenerate the rejected items
            page.get_by_test_id("regenerate").click()
            expect(page.locator("#status")).to_contain_text("2 rejected items regenerating (1 with an edited prompt)")
            for key in ("sku-102", "sku-103"):
                expect(card(key).get_by_test_id("history-entry")).to_have_count(1, timeout=60_000)
                expect(card(key)).to_have_attribute("data-state", "succeeded", timeout=60_000)
                expect(card(key)).to_have_attribute("data-review", "unreviewed")
                new_src = card(key).locator("img.current").get_attribute("src")
                assert new_src and new_src != old_src[key], key  # a new image, not the old one
                _loaded(page, f'article.card[data-item="{key}"] img.current')
                _loaded(page, f'article.card[data-item="{key}"] [data-testid="history-entry"] img')
            expect(card("sku-103").get_by_test_id("prompt")).to_have_text(NEW_PROMPT)
            expect(card("sku-103").get_by_test_id("history-entry")).to_contain_text("glass vase with dried flowers")
            expect(card("sku-101")).to_have_attribute("data-review", "approved")
            page.locator("details.history").first.scroll_into_view_if_needed()
            shot = tmp_path / "2-regenerated.png"
            page.screenshot(path=str(shot), full_page=True)

            # the bytes: the edited item's new image is not its old one (read through the app, as the page does)
            vase = card("sku-103")
            new_img = page.request.get(url + str(vase.locator("img.current").get_attribute("src")))
            old_img = page.request.get(url + str(vase.get_by_test_id("history-entry").locator("a")
                                                 .get_attribute("href")))
            assert new_img.ok and old_img.ok and new_img.body() != old_img.body()
            assert errors == []
        finally:
            browser.close()

    # both were generated again (paid, the cache bypassed), nothing else was
    assert sandbox.ledger()["billed_images"] == 7
    with sessions_for(job.db_url) as sessions, sessions() as s:
        paid = sorted(k for k, in s.execute(select(Item.key).join(LedgerEntry, LedgerEntry.item_id == Item.id)
                                            .where(LedgerEntry.kind == "image")))
        kept = sorted((k, h.seq) for k, h in s.execute(select(Item.key, ItemOutput)
                                                        .join(ItemOutput, ItemOutput.item_id == Item.id)))
    assert paid == sorted(["sku-101", "sku-102", "sku-102", "sku-103", "sku-103", "sku-104", "sku-106"])
    assert kept == [("sku-102", 1), ("sku-103", 1)]
    KEPT.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, KEPT / "review-job-page.png")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SHOT.parent.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS_SHOT)


@pytest.fixture
def slow_sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.4, "max_s": 0.6}}}})
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(900)
def test_live_progress_and_bulk_review_in_chromium(tmp_path: Path, slow_sandbox: SandboxServer,
                                                   chromium: str) -> None:
    """The jobs page's progress bar fills in place while the app's worker runs the job (slow sandbox calls: a
    few seconds in all); then two images are ticked with x and approved together with a note."""
    from playwright.sync_api import expect, sync_playwright

    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(tmp_path, db_url, slow_sandbox.url, worker={"concurrency": 2, "lease_s": 10})
    items = [{"id": f"i{n:02d}", "title": f"a small object number {n}"} for n in range(16)]
    assert cli("submit", write_manifest(tmp_path, "live", items), "--config", cfg)[0] == 0
    job = Job(tmp_path, cfg, db_url, "live")
    with serving(job.settings(), worker=True) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            bar = page.locator('tr[data-job-id="1"] progress')
            values = [int(bar.evaluate("b => b.value"))]
            expect(page.locator('tr[data-job-id="1"] [data-field="done"]')).to_have_text("16/16", timeout=120_000)
            values.append(int(bar.evaluate("b => b.value")))
            assert values[0] < 16 and values[-1] == 16  # filled in place, without a reload
            expect(page.locator('tr[data-job-id="1"] [data-field="state"]')).to_have_text("succeeded")

            page.goto(url + "/jobs/1")
            for _ in range(3):
                page.keyboard.press("j")
            page.keyboard.press("x")  # tick i02
            page.keyboard.press("j")
            page.keyboard.press("x")  # tick i03
            page.locator("#bulk input[name=note]").fill("hero shots")
            page.get_by_test_id("bulk-approve").click()
            expect(page.locator("#status")).to_contain_text("2 items approved")
            for key in ("i02", "i03"):
                expect(page.locator(f'article.card[data-item="{key}"]')).to_have_attribute("data-review", "approved")
            expect(page.locator('article.card[data-item="i01"]')).to_have_attribute("data-review", "unreviewed")
            expect(page.locator('article.card[data-item="i02"] .note')).to_have_text("note: hero shots")
        finally:
            browser.close()
    code, stdout, _ = cli("export", "live", "--approved", "--config", cfg)
    assert code == 0 and [i["id"] for i in json.loads(stdout)["items"]] == ["i02", "i03"]
