"""The review app's pages over HTTP: the gallery's filters and paging (also on a 50,000-item job), exports,
the providers page, live progress while a job runs, and images from S3 as presigned URLs (moto over HTTP)."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from pipeline.db.models import Item
from pipeline.sandbox.server import SandboxServer
from tests.reports.rows import add_items, add_job, migrated
from tests.review.helpers import cli, sessions_for, write_config, write_manifest
from tests.web.conftest import SCRIPT_ID, XSS_ID, Job, browser_client, run_job, serving


def _keys(html: str) -> list[str]:
    import html as h

    return [h.unescape(k) for k in re.findall(r'<article class="card"[^>]*data-item="([^"]*)"', html)]


def test_gallery_filters_and_paging(job: Job) -> None:
    assert cli("review", job.name, "--approve", "a1", "--reject", "a2", "--config", job.cfg)[0] == 0
    with serving(job.settings()) as (url, _):
        c = httpx.Client(base_url=url)
        everything = _keys(c.get("/jobs/1").text)
        assert everything == ["a1", "a2", XSS_ID, SCRIPT_ID, "bad"]
        for query, expected in [("state=failed", ["bad"]), ("state=succeeded", ["a1", "a2", XSS_ID, SCRIPT_ID]),
                                ("review=approved", ["a1"]), ("review=rejected", ["a2"]),
                                ("review=unreviewed", [XSS_ID, SCRIPT_ID, "bad"]), ("tag=kitchen", ["a1"]),
                                ("tag=sale", [XSS_ID]), ("tag=nope%25", []), ("resolution=2K", ["bad"]),
                                ("provider=sandbox", everything), ("provider=kie", []),
                                ("review=approved&tag=kitchen&resolution=1K", ["a1"]),
                                ("state=bogus", everything)]:
            assert _keys(c.get(f"/jobs/1?{query}").text) == expected, query
        page2 = c.get("/jobs/1?per_page=2&page=2").text
        assert _keys(page2) == [XSS_ID, SCRIPT_ID] and "page 2 of 3 · 5 items" in page2
        assert 'page=1">← previous</a>' in page2 and 'page=3" rel="next">next →</a>' in page2
        assert _keys(c.get("/jobs/1?per_page=2&page=99").text) == ["bad"]  # clamped to the last page
        frag = c.get("/jobs/1?review=rejected&fragment=gallery").text
        assert "<html" not in frag and _keys(frag) == ["a2"]
        assert c.get("/jobs/web").status_code == 200 and c.get("/jobs/nojob").status_code == 404
        assert c.get("/api/jobs/nojob").status_code == 404


def test_a_big_job_pages_through_its_gallery(tmp_path: Path) -> None:
    """50,000 items: a page of the gallery, its last page, a filter and the jobs list each answer quickly."""
    db_url = f"sqlite:///{tmp_path / 'big.sqlite'}"
    now = datetime(2026, 3, 10, 12, 0)
    with migrated(db_url) as sessions:
        job_id = add_job(sessions, "big", now)
        add_items(sessions, job_id, 50_000, now, lambda i: {"state": "failed" if i % 10 == 0 else "succeeded",
                                                           "tags": ["x"] if i % 2 else [],
                                                           "failure_reason": "boom" if i % 10 == 0 else None})
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(f"database_url: {db_url}\nstorage_url: file://{tmp_path / 'out'}\n")
    from pipeline.config import load_settings

    with serving(load_settings(cfg, env={})) as (url, _):
        c = httpx.Client(base_url=url, timeout=60)
        timings = {}
        for path in ("/jobs/1", "/jobs/1?page=1042", "/jobs/1?state=failed&tag=x&page=3", "/", "/api/jobs/1"):
            t0 = time.perf_counter()
            r = c.get(path)
            timings[path] = time.perf_counter() - t0
            assert r.status_code == 200, path
        first = c.get("/jobs/1").text
        assert len(_keys(first)) == 48 and "page 1 of 1042 · 50000 items" in first
        last = c.get("/jobs/1?page=1042").text
        assert _keys(last) == [f"it-{i:06d}" for i in range(49_968, 50_000)]
        assert c.get("/api/jobs/1").json()["review"] == {"approved": 0, "rejected": 0, "unreviewed": 50_000}
        # generous bounds for a loaded 2-core machine; each is well under a second when idle
        assert max(timings.values()) < 10, timings


def test_exports_over_http(job: Job) -> None:
    assert cli("review", job.name, "--approve", f"a1,{SCRIPT_ID}", "--config", job.cfg)[0] == 0
    with serving(job.settings()) as (url, _), sessions_for(job.db_url) as sessions:
        with sessions() as s:
            keys = dict(s.execute(select(Item.key, Item.output_key)).tuples().all())
        c = httpx.Client(base_url=url)
        r = c.get("/jobs/1/export.csv")
        assert r.status_code == 200 and r.headers["content-disposition"] == 'attachment; filename="web-approved.csv"'
        assert [line.split(",")[0] for line in r.text.splitlines()] == ["id", "a1", SCRIPT_ID]
        m = c.get("/jobs/1/export.json").json()
        assert m["count"] == 2 and [i["id"] for i in m["items"]] == ["a1", SCRIPT_ID]
        z = zipfile.ZipFile(io.BytesIO(c.get("/jobs/1/export.zip").content))
        assert z.read(f"images/{keys['a1']}") == (job.tmp / "out" / keys["a1"]).read_bytes()
        assert json.loads(z.read("manifest.json"))["count"] == 2
        assert c.get("/jobs/1/export.exe").status_code == 404


def test_providers_page_and_live_api(job: Job) -> None:
    with serving(job.settings()) as (url, _):
        c = httpx.Client(base_url=url)
        page = c.get("/providers").text
        assert 'data-provider="sandbox"' in page and 'id="providers"' in page
        frag = c.get("/providers?fragment=table").text
        assert "<html" not in frag and 'data-provider="sandbox"' in frag
        api = c.get("/api/providers").json()
        sandbox = next(p for p in api["providers"] if p["name"] == "sandbox")
        assert sandbox["stability"]["1h"]["requests"] == 5 and sandbox["state"] == "ok"


@pytest.mark.timeout(300)
def test_jobs_page_shows_live_progress(tmp_path: Path, sandbox: SandboxServer) -> None:
    """A job submitted while the app runs (with its in-process worker): /api/jobs, which the jobs page polls every
    two seconds, goes from 0 done to all done; the page lists it with its progress bar."""
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(tmp_path, db_url, sandbox.url)
    items = [{"id": f"i{n}", "title": f"thing {n}"} for n in range(12)]
    manifest = write_manifest(tmp_path, "live", items)
    assert cli("submit", manifest, "--config", cfg)[0] == 0
    from pipeline.config import load_settings

    seen: list[int] = []
    with serving(load_settings(cfg, env={}), worker=True) as (url, _):
        c, _csrf = browser_client(url)
        page = c.get("/").text
        assert 'tr data-job-id="1"' in page and '<progress data-field="progress" max="12"' in page
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            j = c.get("/api/jobs", params={"ids": "1"}).json()["jobs"][0]
            seen.append(j["done"])
            if j["done"] == j["total"] == 12:
                break
            time.sleep(0.2)
    assert seen[-1] == 12 and seen[0] < 12 and seen == sorted(seen)
    assert j["state"] == "succeeded" and j["counts"]["succeeded"] == 12 and j["cost_usd"] != "0.00"


def test_s3_images_are_presigned_and_history_is_kept(tmp_path: Path, sandbox: SandboxServer,
                                                      s3_bucket: tuple[str, str], s3_env: dict[str, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, bucket = s3_bucket
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    job = run_job(tmp_path, sandbox, [{"id": "s1", "title": "a stone bowl"}, {"id": "s2", "title": "a tin cup"}],
                  name="s3job", storage_url=f"s3://{bucket}/imgs")
    assert cli("review", "s3job", "--reject", "s1", "--config", job.cfg)[0] == 0
    code, _, out = cli("rerun", "s3job", "--rejected", "--config", job.cfg)
    assert code == 0 and "old images kept as history: 1" in out, out
    with serving(job.settings()) as (url, _), sessions_for(job.db_url) as sessions:
        with sessions() as s:
            s1 = s.scalars(select(Item).where(Item.key == "s1")).one()
        c = httpx.Client(base_url=url)
        page = c.get("/jobs/1")
        assert endpoint in page.headers["content-security-policy"]  # images may come from the S3 endpoint
        r = c.get(f"/media/items/{s1.id}/image")
        assert r.status_code == 302 and r.headers["location"].startswith(f"{endpoint}/{bucket}/imgs/")
        assert "X-Amz-Signature=" in r.headers["location"] and "X-Amz-Expires=300" in r.headers["location"]
        img = httpx.get(r.headers["location"])
        assert img.status_code == 200 and img.content[:8] == b"\x89PNG\r\n\x1a\n"
        hist = re.search(r'href="(/media/history/\d+/image)"', page.text)
        assert hist is not None
        old = httpx.get(c.get(hist.group(1)).headers["location"])
        assert old.status_code == 200 and old.content[:4] == b"\x89PNG"
        assert httpx.get(f"{endpoint}/{bucket}/imgs/{s1.output_key}").status_code == 403  # not public
