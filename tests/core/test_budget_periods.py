"""Budget reservations keep their period: a call reserved before midnight (or a month's end) and settled after it
is charged to the period it was admitted under, and leaves no reservation behind in either period. A fake clock
jumps across the boundary while the call is at the sandbox (over HTTP), on SQLite and Postgres."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pipeline.config import BudgetCaps, load_settings
from pipeline.core import budget, lifecycle
from pipeline.core.context import ProviderRegistry
from pipeline.core.process import Outcome, process_item
from pipeline.core.submit import submit
from pipeline.core.sweep import sweep
from pipeline.db.models import Attempt, BudgetPeriod, Item, Job
from pipeline.errors import InputError
from pipeline.providers.base import CallHooks, ImageRequest, ImageResult, Provider
from pipeline.runtime import Runtime
from pipeline.sandbox.server import SandboxServer
from tests.core.helpers import job, runtime, settings_for, specs

PRICE = Decimal("0.134")
FLAT = {"1K": str(PRICE), "2K": str(PRICE), "4K": "0.24"}


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Spanning:
    """The real adapter (the sandbox over HTTP); when its answer arrives, the clock has passed the boundary."""

    def __init__(self, inner: Provider, clock: FakeClock, after: datetime) -> None:
        self.inner, self.clock, self.after = inner, clock, after

    def generate(self, request: ImageRequest, hooks: CallHooks) -> ImageResult:
        result = self.inner.generate(request, hooks)
        self.clock.now = self.after
        return result

    def close(self) -> None:
        self.inner.close()


def _runtime(tmp_path: Path, db_url: str, sandbox: SandboxServer, **caps: Any) -> Runtime:
    providers = {"sandbox": {"base_url": sandbox.url, "cost_from_usage": False, "prices": FLAT}}
    return runtime(settings_for(tmp_path, db_url, sandbox.url, providers=providers, budget=caps))


def _periods(rt: Runtime) -> dict[str, tuple[Decimal, Decimal]]:
    with rt.sessions() as s:
        return {p.period: (p.spent_usd, p.reserved_usd) for p in s.scalars(select(BudgetPeriod))}


def _process_across(rt: Runtime, job_id: int, before: datetime, after: datetime) -> Outcome:
    """Process the job's one item with the clock at `before` until the provider answers, `after` from then."""
    clock = FakeClock(before)
    inner = rt.ctx.providers
    registry = ProviderRegistry(rt.settings, lambda cfg, region: Spanning(inner.get(cfg.name, region), clock, after))
    ctx = dataclasses.replace(rt.ctx, clock=clock, providers=registry)
    with rt.sessions() as s:
        item_id = s.scalar(select(Item.id).where(Item.job_id == job_id))
    assert item_id is not None
    return process_item(ctx, item_id)


def test_a_call_across_midnight_is_charged_to_the_day_it_was_reserved_in(
        tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    before, after = datetime(2026, 11, 27, 23, 59, 59), datetime(2026, 11, 28, 0, 0, 2)
    rt = _runtime(tmp_path, db_url, sandbox, daily_usd="10", monthly_usd="100")
    try:
        res = submit(rt.sessions, job("late"), specs(1), before - timedelta(seconds=1))
        assert _process_across(rt, res.job_id, before, after) == Outcome.SUCCEEDED
        periods = _periods(rt)
        # the old day holds the cost and no reservation; the new day's row was never made, so nothing is lost
        # to it and nothing goes negative in it
        assert periods == {"day:2026-11-27": (PRICE, 0), "month:2026-11": (PRICE, 0)}
        with rt.sessions() as s:
            jb = s.get(Job, res.job_id)
            item = s.scalar(select(Item).where(Item.job_id == res.job_id))
            assert jb is not None and jb.spent_usd == PRICE and jb.reserved_usd == 0
            assert item is not None and item.reserved_usd == 0 and item.reserved_periods is None
    finally:
        rt.close()


def test_the_new_days_row_stays_whole_when_it_exists_already(tmp_path: Path, db_url: str,
                                                             sandbox: SandboxServer) -> None:
    """The new day has its own reservation in flight when the old day's call settles: no negative
    reserved_usd (which would let the next calls pass the daily cap), no cost moved between days."""
    before, after = datetime(2026, 11, 27, 23, 59, 59), datetime(2026, 11, 28, 0, 0, 2)
    rt = _runtime(tmp_path, db_url, sandbox, daily_usd="10")
    try:
        late = submit(rt.sessions, job("late"), specs(1), before - timedelta(seconds=1))
        early = submit(rt.sessions, job("early"), specs(1, prompt="a pear {i}"), before - timedelta(seconds=1))
        with rt.sessions.begin() as s:  # a call of the new day, reserved and still in flight
            resv = budget.reserve(s, early.job_id, PRICE, rt.settings.budget, after)
            assert resv.periods == ("day:2026-11-28",)
        assert _process_across(rt, late.job_id, before, after) == Outcome.SUCCEEDED
        assert _periods(rt) == {"day:2026-11-27": (PRICE, 0), "day:2026-11-28": (0, PRICE)}
        assert all(reserved >= 0 for _, reserved in _periods(rt).values())
    finally:
        rt.close()


def test_a_call_across_the_months_end_is_charged_to_the_old_month(tmp_path: Path, db_url: str,
                                                                  sandbox: SandboxServer) -> None:
    before, after = datetime(2026, 11, 30, 23, 59, 58), datetime(2026, 12, 1, 0, 0, 1)
    rt = _runtime(tmp_path, db_url, sandbox, daily_usd="10", monthly_usd="100")
    try:
        res = submit(rt.sessions, job("month-end"), specs(1), before - timedelta(seconds=1))
        assert _process_across(rt, res.job_id, before, after) == Outcome.SUCCEEDED
        assert _periods(rt) == {"day:2026-11-30": (PRICE, 0), "month:2026-11": (PRICE, 0)}
    finally:
        rt.close()


def test_a_given_back_reservation_is_settled_in_its_own_day(tmp_path: Path, db_url: str,
                                                            sandbox: SandboxServer) -> None:
    """A worker reserved before midnight and died with its call open; the sweeper gives the item back after
    midnight: the maybe-billed call counts as spent in the old day, and the new day is untouched."""
    before, after = datetime(2026, 11, 27, 23, 59, 50), datetime(2026, 11, 28, 0, 1, 0)
    rt = _runtime(tmp_path, db_url, sandbox, daily_usd="10", monthly_usd="100")
    try:
        res = submit(rt.sessions, job("dead"), specs(1), before - timedelta(seconds=1))
        with rt.sessions.begin() as s:
            item_id = s.scalar(select(Item.id).where(Item.job_id == res.job_id))
            assert item_id is not None
            assert lifecycle.claim(s, item_id, "dead-worker", before + timedelta(seconds=5), before)
            resv = budget.reserve(s, res.job_id, PRICE, rt.settings.budget, before)
            assert lifecycle.hold(s, item_id, "dead-worker", PRICE, resv.periods)
            s.add(Attempt(item_id=item_id, job_id=res.job_id, provider="sandbox", lease_owner="dead-worker",
                          started_at=before))
        swept = sweep(rt.sessions, after, queued_timeout_s=60)
        assert (swept.expired_leases, swept.abandoned_attempts) == (1, 1)
        assert _periods(rt) == {"day:2026-11-27": (PRICE, 0), "month:2026-11": (PRICE, 0)}
        with rt.sessions() as s:
            jb = s.get(Job, res.job_id)
            assert jb is not None and (jb.spent_usd, jb.reserved_usd) == (PRICE, 0)
    finally:
        rt.close()


def test_the_budget_day_follows_its_time_zone(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    """22:59:59 UTC is 23:59:59 in Berlin (winter): the call that spans Berlin's midnight is the Berlin day's."""
    assert budget.period_keys(datetime(2026, 11, 27, 22, 59, 59), "Europe/Berlin") == ("day:2026-11-27",
                                                                                      "month:2026-11")
    assert budget.period_keys(datetime(2026, 11, 27, 23, 0, 1), "Europe/Berlin") == ("day:2026-11-28",
                                                                                    "month:2026-11")
    assert budget.period_keys(datetime(2026, 11, 30, 23, 0, 1), "Europe/Berlin")[1] == "month:2026-12"
    rt = _runtime(tmp_path, db_url, sandbox, daily_usd="10", timezone="Europe/Berlin")
    try:
        res = submit(rt.sessions, job("berlin"), specs(1), datetime(2026, 11, 27, 22, 0))
        assert _process_across(rt, res.job_id, datetime(2026, 11, 27, 22, 59, 59),
                               datetime(2026, 11, 27, 23, 0, 2)) == Outcome.SUCCEEDED
        assert _periods(rt) == {"day:2026-11-27": (PRICE, 0)}
        with rt.sessions.begin() as s:  # the next call, a second later in UTC, is in Berlin's next day
            resv = budget.reserve(s, res.job_id, PRICE, rt.settings.budget, datetime(2026, 11, 27, 23, 0, 3))
            assert resv.periods == ("day:2026-11-28",)
    finally:
        rt.close()


def test_an_unknown_budget_time_zone_is_an_input_error(tmp_path: Path) -> None:
    assert BudgetCaps().timezone == "UTC"
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("budget: {daily_usd: 5, timezone: Mars/Olympus}\n")
    with pytest.raises(InputError) as e:
        load_settings(cfg, env={})
    assert "budget.timezone" in str(e.value) and "Mars/Olympus" in str(e.value)
