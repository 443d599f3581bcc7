"""Budgets under real concurrency on Postgres: 50 workers, a $1.00 cap, a $0.134 price."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline.clock import utcnow
from pipeline.core.control import rerun
from pipeline.core.process import process_item
from pipeline.core.submit import submit
from pipeline.db.models import BudgetPeriod, Item, Job
from pipeline.sandbox.server import SandboxServer
from pipeline.states import ItemState
from tests.core.helpers import job, runtime, settings_for, specs

FLAT = {"1K": "0.134", "2K": "0.134", "4K": "0.24"}


def _drain(rt, job_id: int, threads: int) -> None:  # type: ignore[no-untyped-def]
    """`threads` workers pull items concurrently until none is pending (like 50 worker slots)."""
    import time

    deadline = time.monotonic() + 90

    def worker() -> None:
        while time.monotonic() < deadline:
            with rt.sessions() as s:
                ids = list(s.scalars(select(Item.id).where(Item.job_id == job_id, Item.state == "pending")))
                busy = s.scalar(select(Item.id).where(Item.job_id == job_id,
                                                      Item.state.in_(["pending", "running"])).limit(1))
            if busy is None:
                return
            for i in ids:
                process_item(rt.ctx, i)
            time.sleep(0.05)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def test_fifty_workers_never_pass_the_cap(tmp_path: Path, pg_url: str, sandbox: SandboxServer,
                                          caplog: pytest.LogCaptureFixture) -> None:
    providers = {"sandbox": {"base_url": sandbox.url, "cost_from_usage": False, "prices": FLAT}}
    rt = runtime(settings_for(tmp_path, pg_url, sandbox.url, providers=providers,
                              worker={"concurrency": 50}))
    try:
        res = submit(rt.sessions, job(max_usd=Decimal("1.00")), specs(30), utcnow())
        with caplog.at_level(logging.WARNING, logger="pipeline.budget"):
            _drain(rt, res.job_id, threads=50)
        affordable = int(Decimal("1.00") / Decimal("0.134"))  # 7
        with rt.sessions() as s:
            jb = s.get(Job, res.job_id)
            states = [i.state for i in s.scalars(select(Item).where(Item.job_id == res.job_id))]
        assert jb is not None
        assert jb.spent_usd <= Decimal("1.00") and jb.reserved_usd == 0
        assert jb.spent_usd == Decimal("0.134") * affordable
        assert states.count(ItemState.SUCCEEDED) == affordable
        assert states.count(ItemState.BLOCKED) == 30 - affordable
        assert sandbox.ledger()["billed_images"] == affordable
        texts = [r.getMessage() for r in caplog.records]
        assert sum("50% used" in t for t in texts) == 1 and sum("80% used" in t for t in texts) == 1

        # raising the cap and rerunning continues the job
        with rt.sessions.begin() as s:
            jb = s.get(Job, res.job_id)
            assert jb is not None
            jb.max_usd = Decimal("2.00")
        rerun(rt.sessions, str(res.job_id), utcnow(), failed=True)
        _drain(rt, res.job_id, threads=20)
        assert sandbox.ledger()["billed_images"] == int(Decimal("2.00") / Decimal("0.134"))
    finally:
        rt.close()


def test_global_daily_cap_holds_across_jobs(tmp_path: Path, pg_url: str, sandbox: SandboxServer) -> None:
    providers = {"sandbox": {"base_url": sandbox.url, "cost_from_usage": False, "prices": FLAT}}
    rt = runtime(settings_for(tmp_path, pg_url, sandbox.url, providers=providers, budget={"daily_usd": "0.50"}))
    try:
        a = submit(rt.sessions, job("job-a"), specs(5, prompt="a {i}"), utcnow())
        b = submit(rt.sessions, job("job-b"), specs(5, prompt="b {i}"), utcnow())
        t1 = threading.Thread(target=_drain, args=(rt, a.job_id, 10))
        t2 = threading.Thread(target=_drain, args=(rt, b.job_id, 10))
        t1.start(), t2.start()
        t1.join(), t2.join()
        with rt.sessions() as s:
            periods = list(s.scalars(select(BudgetPeriod)))
        assert len(periods) == 1 and periods[0].spent_usd == Decimal("0.402") and periods[0].reserved_usd == 0
        assert sandbox.ledger()["billed_images"] == 3
    finally:
        rt.close()
