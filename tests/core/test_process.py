"""The core state machine against real databases (SQLite and Postgres) and the sandbox over HTTP."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select, update

from pipeline.clock import utcnow
from pipeline.core.leases import claim
from pipeline.core.process import Outcome, process_item
from pipeline.core.submit import submit
from pipeline.core.sweep import sweep
from pipeline.db.models import Attempt, Item, Job, LedgerEntry
from pipeline.sandbox.server import SandboxServer
from pipeline.states import ItemState
from tests.core.helpers import job, runtime, settings_for, specs


def _run_all(rt, job_id: int, threads: int = 8, rounds: int = 200) -> None:  # type: ignore[no-untyped-def]
    """Drive items to final states with `threads` concurrent processors (the worker's job, without Celery)."""
    import time

    for _ in range(rounds):
        with rt.sessions() as s:
            due = list(s.scalars(select(Item.id).where(Item.job_id == job_id,
                                                       Item.state.in_(["pending", "queued"]))))
            active = s.scalar(select(Item.id).where(Item.job_id == job_id,
                                                    Item.state.in_(["pending", "queued", "running"])).limit(1))
        if active is None:
            return
        ts = [threading.Thread(target=process_item, args=(rt.ctx, i)) for i in due[:threads]]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        time.sleep(0.05)
    raise AssertionError("items did not finish")


def test_items_succeed_and_are_stored_and_priced(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    rt = runtime(settings_for(tmp_path, db_url, sandbox.url))
    try:
        res = submit(rt.sessions, job(), specs(4), utcnow())
        _run_all(rt, res.job_id)
        with rt.sessions() as s:
            items = list(s.scalars(select(Item).where(Item.job_id == res.job_id)))
            assert {i.state for i in items} == {ItemState.SUCCEEDED}
            for i in items:
                assert (tmp_path / "out" / i.output_key).stat().st_size > 1000
            ledger = list(s.scalars(select(LedgerEntry)))
            total = sum((e.cost_usd for e in ledger), Decimal(0))
            jb = s.get(Job, res.job_id)
            assert jb is not None and jb.spent_usd == total and jb.reserved_usd == 0
        billed = sandbox.ledger()
        assert billed["billed_images"] == 4
        assert Decimal(billed["billed_usd"]) == total
    finally:
        rt.close()


def test_cache_is_single_flight_under_concurrency(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    """20 identical items on 8 threads: one billed image, 19 answered from the cache."""
    rt = runtime(settings_for(tmp_path, db_url, sandbox.url))
    try:
        res = submit(rt.sessions, job(), specs(20, prompt="the same teapot"), utcnow())
        _run_all(rt, res.job_id, threads=8)
        with rt.sessions() as s:
            states = [i.state for i in s.scalars(select(Item).where(Item.job_id == res.job_id))]
        assert states.count(ItemState.SUCCEEDED) == 1
        assert states.count(ItemState.CACHED) == 19
        assert sandbox.ledger()["billed_images"] == 1
        for i in range(20):
            assert (tmp_path / "out" / f"test/item-{i:03d}.png").exists()
    finally:
        rt.close()


def test_duplicate_delivery_pays_once(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    rt = runtime(settings_for(tmp_path, db_url, sandbox.url))
    try:
        res = submit(rt.sessions, job(), specs(1), utcnow())
        with rt.sessions() as s:
            item_id = s.scalar(select(Item.id).where(Item.job_id == res.job_id))
        assert item_id is not None
        outcomes: list[Outcome] = []
        ts = [threading.Thread(target=lambda: outcomes.append(process_item(rt.ctx, item_id))) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert sorted(outcomes).count(Outcome.SUCCEEDED) == 1
        assert outcomes.count(Outcome.SKIPPED) == 5
        assert sandbox.ledger()["billed_images"] == 1
    finally:
        rt.close()


def test_retryable_errors_back_off_then_fail_with_reason(tmp_path: Path, db_url: str,
                                                         sandbox: SandboxServer) -> None:
    rt = runtime(settings_for(tmp_path, db_url, sandbox.url))
    try:
        res = submit(rt.sessions, job(), specs(1, prompt="always down [sandbox:503]"), utcnow())
        _run_all(rt, res.job_id)
        with rt.sessions() as s:
            item = s.scalar(select(Item).where(Item.job_id == res.job_id))
            assert item is not None
            assert item.state == ItemState.FAILED
            assert item.attempts == 3
            assert "gave up after 3 attempts" in (item.failure_reason or "")
            attempts = list(s.scalars(select(Attempt).where(Attempt.item_id == item.id)))
            assert [a.http_status for a in attempts] == [503, 503, 503]
            assert all(a.error_class == "unavailable" and not a.maybe_billed for a in attempts)
        assert sandbox.ledger()["billed_images"] == 0
    finally:
        rt.close()


def test_transient_error_then_success(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    rt = runtime(settings_for(tmp_path, db_url, sandbox.url))
    try:
        res = submit(rt.sessions, job(), specs(1, prompt="flaky [sandbox:500x1]"), utcnow())
        _run_all(rt, res.job_id)
        with rt.sessions() as s:
            item = s.scalar(select(Item).where(Item.job_id == res.job_id))
            assert item is not None and item.state == ItemState.SUCCEEDED and item.attempts == 2
    finally:
        rt.close()


def test_terminal_block_is_never_retried(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    rt = runtime(settings_for(tmp_path, db_url, sandbox.url))
    try:
        res = submit(rt.sessions, job(), specs(1, prompt="bad [sandbox:block-prompt]"), utcnow())
        _run_all(rt, res.job_id)
        with rt.sessions() as s:
            item = s.scalar(select(Item).where(Item.job_id == res.job_id))
            assert item is not None
            assert item.state == ItemState.FAILED and item.attempts == 1
            assert "prompt blocked" in (item.failure_reason or "")
        assert sandbox.ledger()["requests"] == 1
    finally:
        rt.close()


def test_job_budget_blocks_what_does_not_fit(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    flat = {"sandbox": {"base_url": sandbox.url, "cost_from_usage": False,
                        "prices": {"1K": "0.134", "2K": "0.134", "4K": "0.24"}}}
    rt = runtime(settings_for(tmp_path, db_url, sandbox.url, providers=flat))
    try:
        res = submit(rt.sessions, job(max_usd=Decimal("0.50")), specs(6), utcnow())
        _run_all(rt, res.job_id)
        with rt.sessions() as s:
            states = [i.state for i in s.scalars(select(Item).where(Item.job_id == res.job_id))]
            jb = s.get(Job, res.job_id)
            assert jb is not None
            assert states.count(ItemState.SUCCEEDED) == 3  # floor(0.50 / 0.134)
            assert states.count(ItemState.BLOCKED) == 3
            assert jb.spent_usd == Decimal("0.402") and jb.reserved_usd == 0
        assert sandbox.ledger()["billed_images"] == 3
    finally:
        rt.close()


def test_expired_lease_is_swept_and_attempt_marked_abandoned(tmp_path: Path, db_url: str,
                                                             sandbox: SandboxServer) -> None:
    rt = runtime(settings_for(tmp_path, db_url, sandbox.url))
    try:
        res = submit(rt.sessions, job(), specs(1), utcnow())
        with rt.sessions.begin() as s:
            item_id = s.scalar(select(Item.id).where(Item.job_id == res.job_id))
        assert item_id is not None
        now = utcnow()
        assert claim(rt.sessions, item_id, "dead-worker", 5, now) is not None
        with rt.sessions.begin() as s:
            s.add(Attempt(item_id=item_id, job_id=res.job_id, provider="sandbox", lease_owner="dead-worker",
                          started_at=now))
            s.execute(update(Item).where(Item.id == item_id).values(lease_expires_at=now - timedelta(seconds=1)))
        out = sweep(rt.sessions, utcnow(), queued_timeout_s=60)
        assert out.expired_leases == 1 and out.abandoned_attempts == 1
        with rt.sessions() as s:
            item = s.get(Item, item_id)
            att = s.scalar(select(Attempt).where(Attempt.item_id == item_id))
            assert item is not None and item.state == ItemState.PENDING and item.lease_owner is None
            assert att is not None and att.outcome == "abandoned" and att.maybe_billed
        assert process_item(rt.ctx, item_id) == Outcome.SUCCEEDED
    finally:
        rt.close()


def test_resubmission_adds_only_what_changed(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    rt = runtime(settings_for(tmp_path, db_url, sandbox.url))
    try:
        first = submit(rt.sessions, job(), specs(3), utcnow())
        _run_all(rt, first.job_id)
        changed = specs(4)
        changed[1] = changed[1].__class__(key="item-001", prompt="a green pear", output_key="test/item-001.png")
        again = submit(rt.sessions, job(), changed, utcnow())
        assert again.job_id == first.job_id
        assert (again.new, again.changed, again.unchanged) == (1, 1, 2)
        _run_all(rt, first.job_id)
        assert sandbox.ledger()["billed_images"] == 5  # 3 + the changed one + the new one
    finally:
        rt.close()
