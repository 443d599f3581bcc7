"""`mode: auto` and Google's Flex tier: flex providers only while the deadline is far enough away, and first;
a shed Flex call moves the item on without counting against the provider's health; blocked calls are recorded
at the cost of the tokens they report."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pipeline.clock import utcnow
from pipeline.config import ProviderConfig
from pipeline.core.process import process_item
from pipeline.core.providers_state import consecutive_faults
from pipeline.core.submit import submit
from pipeline.core.tiers import flex_order
from pipeline.db.models import Attempt, Item, LedgerEntry
from pipeline.sandbox.server import SandboxServer
from pipeline.states import ItemState
from tests.core.helpers import job, runtime, settings_for, specs

NOW = datetime(2026, 11, 29, 12, 0)
CANDIDATES = [(0, "google"), (1, "google-flex"), (2, "kie")]


def cfg(name: str) -> ProviderConfig:
    return ProviderConfig(name=name, kind="gemini", service_tier="flex" if name.endswith("flex") else "standard")


@pytest.mark.parametrize(
    ("mode", "deadline_h", "order", "skipped"),
    [
        ("sync", None, ["google", "google-flex", "kie"], 0),  # sync: the job's own order, flex included
        ("auto", 2.0, ["google-flex", "google", "kie"], 0),  # far deadline: flex first
        ("auto", 1.0, ["google-flex", "google", "kie"], 0),  # exactly the minimum
        ("auto", 0.5, ["google", "kie"], 1),  # too near: flex skipped, and said why
        ("auto", None, ["google", "kie"], 1),  # no deadline: flex is not assumed acceptable
    ],
)
def test_flex_order(mode: str, deadline_h: float | None, order: list[str], skipped: int) -> None:
    deadline = None if deadline_h is None else NOW + timedelta(hours=deadline_h)
    got, reasons = flex_order(CANDIDATES, cfg, mode=mode, deadline_at=deadline, now=NOW, min_deadline_h=1.0)
    assert [n for _, n in got] == order and len(reasons) == skipped
    assert all("flex tier skipped" in r for r in reasons)


def _settings(tmp: Path, db_url: str, sandbox: SandboxServer) -> Any:
    providers = {"sandbox": {"base_url": sandbox.url},
                 "flexy": {"kind": "gemini", "service_tier": "flex", "base_url": sandbox.url, "api_key_env": None,
                           "cost_from_usage": True, "data_policy": "official",
                           "prices": {"1K": "0.067", "2K": "0.067", "4K": "0.12"}}}
    return settings_for(tmp, db_url, sandbox.url, providers=providers)


def _attempts(rt: Any, job_id: int) -> list[Attempt]:
    with rt.sessions() as s:
        return list(s.scalars(select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.id)))


@pytest.mark.parametrize(("deadline_h", "used"), [(3.0, "flexy"), (0.25, "sandbox")])
def test_auto_mode_uses_flex_only_with_time_to_spare(tmp_path: Path, db_url: str, sandbox: SandboxServer,
                                                     deadline_h: float, used: str) -> None:
    rt = runtime(_settings(tmp_path, db_url, sandbox))
    try:
        spec = job(providers=["sandbox", "flexy"], mode="auto", deadline_at=utcnow() + timedelta(hours=deadline_h))
        res = submit(rt.sessions, spec, specs(1), utcnow())
        with rt.sessions() as s:
            item_id = s.scalar(select(Item.id).where(Item.job_id == res.job_id))
        process_item(rt.ctx, item_id)
        attempts = _attempts(rt, res.job_id)
        assert [a.provider for a in attempts] == [used]
        standard = sandbox.ledger()["billed_usd"]
        assert Decimal(standard) == attempts[0].cost_usd
    finally:
        rt.close()


def test_shed_flex_call_fails_over_and_is_no_fault(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    rt = runtime(_settings(tmp_path, db_url, sandbox))
    try:
        res = submit(rt.sessions, job(providers=["flexy", "sandbox"]), specs(1, prompt="a mug [sandbox:shedx1]"),
                     utcnow())
        with rt.sessions() as s:
            item_id = s.scalar(select(Item.id).where(Item.job_id == res.job_id))
        process_item(rt.ctx, item_id)  # shed by flexy: retryable, moved to the next provider
        with rt.sessions() as s:
            item = s.get(Item, item_id)
            assert item is not None and item.state == ItemState.PENDING and item.provider_index == 1
            assert consecutive_faults(s, "flexy") == 0  # not an outage
        with rt.sessions.begin() as s:
            s.get(Item, item_id).next_attempt_at = utcnow()  # type: ignore[union-attr]
        process_item(rt.ctx, item_id)
        attempts = _attempts(rt, res.job_id)
        assert [(a.provider, a.error_class) for a in attempts] == [("flexy", "shed"), ("sandbox", None)]
        with rt.sessions() as s:
            assert s.get(Item, item_id).state == ItemState.SUCCEEDED  # type: ignore[union-attr]
    finally:
        rt.close()


def test_blocked_call_is_recorded_at_its_token_cost(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    rt = runtime(_settings(tmp_path, db_url, sandbox))
    try:
        res = submit(rt.sessions, job(), specs(1, prompt="bad [sandbox:block-image]"), utcnow())
        with rt.sessions() as s:
            item_id = s.scalar(select(Item.id).where(Item.job_id == res.job_id))
        process_item(rt.ctx, item_id)
        with rt.sessions() as s:
            item = s.get(Item, item_id)
            assert item is not None and item.state == ItemState.FAILED
            ledger = list(s.scalars(select(LedgerEntry).where(LedgerEntry.job_id == res.job_id)))
        assert len(ledger) == 1 and ledger[0].kind == "call" and ledger[0].cost_usd > 0
        assert ledger[0].cost_usd == Decimal(sandbox.ledger()["billed_usd"])
        assert sandbox.ledger()["billed_images"] == 0
    finally:
        rt.close()
