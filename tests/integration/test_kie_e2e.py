"""`kie` jobs through the whole pipeline against the sandbox's Kie.ai task API over HTTP: references by Kie's
upload API (file storage) and by presigned S3 URL (moto), a task that outlives its attempt resumed by the next
attempt, and a worker that dies after creating a task: no second task is created for the same item (counted in
the sandbox's ledger), and the cost equals what the sandbox billed."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select, update

from pipeline import services
from pipeline.clock import utcnow
from pipeline.config import load_settings
from pipeline.core.process import Outcome, process_item
from pipeline.core.sweep import sweep
from pipeline.db.models import Attempt, Item
from pipeline.providers.kie import KieProvider
from pipeline.runtime import open_runtime
from pipeline.sandbox.server import SandboxServer, start_sandbox
from tests.sandbox.sandbox_helpers import image_size, png

PRICES = {"1K": "0.09", "2K": "0.09", "4K": "0.12"}


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox({"providers": {"kie": {"protocol": "kie", "price_per_image": PRICES, "hang_s": 2.5,
                                                  "latency": {"min_s": 0.05, "max_s": 0.1}}}})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIE_API_KEY", "k")


def settings(tmp: Path, sandbox: SandboxServer, db_url: str, *, storage: str | None = None, **kie: Any) -> Any:
    base = f"{sandbox.url}/p/kie"
    cfg = {"database_url": db_url, "storage_url": storage or f"file://{tmp / 'out'}",
           "providers": {"kie": {"base_url": base, "upload_base_url": base, **kie}},
           "worker": {"max_attempts": 6, "backoff_base_s": 0.05, "backoff_cap_s": 0.2}}
    (tmp / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    return load_settings(tmp / "pipeline.yaml")


def manifest(tmp: Path, items: list[dict[str, Any]]) -> Path:
    doc = {"job": "kie-e2e", "providers": ["kie"], "prompt": "Photo of {{ title }}",
           "defaults": {"resolution": "1K", "aspect_ratio": "4:5"}, "items": items}
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(cfg: Any, path: Path) -> Any:
    loaded = services.load(path, cfg)
    rt = open_runtime(cfg)
    try:
        res = services.submit(rt, loaded, utcnow())
        return services.process_here(rt, res.job_id, concurrency=4)
    finally:
        rt.close()


def kie_ledger(sandbox: SandboxServer) -> dict[str, Any]:
    return dict(sandbox.ledger()["by_provider"]["kie"])


def test_a_kie_job_with_references_on_file_storage_uses_kies_upload_api(tmp_path: Path,
                                                                        sandbox: SandboxServer) -> None:
    (tmp_path / "mug.png").write_bytes(png(40, 50, (10, 80, 200)))
    (tmp_path / "logo.png").write_bytes(png(30, 30, (200, 10, 10)))
    items = [{"id": "a", "title": "mug", "references": ["mug.png"]},
             {"id": "b", "title": "mug again", "references": ["mug.png"]},
             {"id": "c", "title": "mug with logo", "references": ["mug.png", "logo.png"]},
             {"id": "d", "title": "plain"}]
    cfg = settings(tmp_path, sandbox, f"sqlite:///{tmp_path / 'db.sqlite'}")
    summary = run(cfg, manifest(tmp_path, items))
    led = kie_ledger(sandbox)
    assert summary.counts["succeeded"] == 4, summary.as_json()
    assert led["generate_requests"] == 4 and led["billed_images"] == 4 == summary.totals.images
    assert summary.totals.cost_usd == Decimal(led["billed_usd"]) == Decimal("0.36")
    outputs = sorted((tmp_path / "out" / "kie-e2e").glob("*.png"))
    assert [p.stem for p in outputs] == ["a", "b", "c", "d"]
    assert all(image_size(p.read_bytes()) == (928, 1152) for p in outputs)  # 4:5 at 1K


def test_a_kie_job_with_references_on_s3_passes_presigned_urls(tmp_path: Path, sandbox: SandboxServer,
                                                               s3_bucket: tuple[str, str], s3_env: dict[str, str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "mug.png").write_bytes(png(40, 50))
    cfg = settings(tmp_path, sandbox, f"sqlite:///{tmp_path / 'db.sqlite'}",
                   storage=f"s3://{s3_bucket[1]}/out", upload_base_url=None)
    summary = run(cfg, manifest(tmp_path, [{"id": "a", "title": "mug", "references": ["mug.png"]},
                                           {"id": "b", "title": "cup", "references": ["mug.png"]}]))
    assert summary.counts["succeeded"] == 2, summary.as_json()
    assert kie_ledger(sandbox)["generate_requests"] == 2
    import boto3.session

    s3 = boto3.session.Session(region_name="us-east-1").client("s3", endpoint_url=s3_bucket[0])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket[1])["Contents"]]
    assert sum(k.startswith("out/provider-references/") for k in keys) == 1  # one reference, put once


def test_a_task_that_outlives_its_attempt_is_resumed_not_created_again(tmp_path: Path, sandbox: SandboxServer,
                                                                       db_url: str) -> None:
    cfg = settings(tmp_path, sandbox, db_url, timeout_s=1.0)
    summary = run(cfg, manifest(tmp_path, [{"id": "slow", "title": "mug [sandbox:hang]"},
                                           {"id": "quick", "title": "cup"}]))
    assert summary.counts["succeeded"] == 2, summary.as_json()
    led = kie_ledger(sandbox)
    assert led["generate_requests"] == 2 and led["billed_images"] == 2  # one task per item, paid once
    assert summary.totals.cost_usd == Decimal(led["billed_usd"])
    rt = open_runtime(cfg)
    try:
        with rt.sessions() as s:
            slow = s.scalar(select(Item.id).where(Item.key == "slow"))
            attempts = list(s.scalars(select(Attempt).where(Attempt.item_id == slow).order_by(Attempt.id)))
    finally:
        rt.close()
    assert len(attempts) >= 2 and len({a.remote_id for a in attempts}) == 1 and attempts[0].remote_id
    assert [a.error_class for a in attempts[:-1]] == ["timeout"] * (len(attempts) - 1)
    assert attempts[-1].outcome == "succeeded" and attempts[-1].cost_usd == Decimal("0.09")


def test_a_worker_that_dies_after_creating_a_task_costs_no_second_task(tmp_path: Path, sandbox: SandboxServer,
                                                                       db_url: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = settings(tmp_path, sandbox, db_url)
    loaded = services.load(manifest(tmp_path, [{"id": "a", "title": "mug"}]), cfg)
    rt = open_runtime(cfg)
    try:
        res = services.submit(rt, loaded, utcnow())
        with rt.sessions() as s:
            item_id = s.scalar(select(Item.id).where(Item.job_id == res.job_id))
        assert item_id is not None

        def die(self: KieProvider, *args: Any, **kw: Any) -> Any:
            raise SystemExit("worker killed while waiting for its task")

        with monkeypatch.context() as m:  # the process dies after createTask answered and the id was saved
            m.setattr(KieProvider, "_wait", die)
            with pytest.raises(SystemExit):
                process_item(rt.ctx, item_id)
        with rt.sessions.begin() as s:
            att = s.scalar(select(Attempt).where(Attempt.item_id == item_id))
            assert att is not None and att.remote_id and att.outcome == "started"
            task_id = att.remote_id
            s.execute(update(Item).where(Item.id == item_id).values(lease_expires_at=utcnow().replace(year=2000)))
        assert sweep(rt.sessions, utcnow(), queued_timeout_s=60).abandoned_attempts == 1
        assert process_item(rt.ctx, item_id) == Outcome.SUCCEEDED
        with rt.sessions() as s:
            attempts = list(s.scalars(select(Attempt).where(Attempt.item_id == item_id).order_by(Attempt.id)))
        assert [a.outcome for a in attempts] == ["abandoned", "succeeded"]
        assert attempts[1].remote_id == task_id
    finally:
        rt.close()
    led = kie_ledger(sandbox)
    assert led["generate_requests"] == 1 and led["billed_images"] == 1
