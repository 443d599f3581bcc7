"""Budgets reserved before the call with one conditional update each, settled from the real cost after.

A reservation succeeds only when `spent + reserved + estimate <= cap` for the job and for every global period
(day, month) in the same transaction, so no interleaving of workers can pass a cap.

A reservation names the periods it was made against (`Reservation.periods`, kept on the item while it runs),
and is settled or given back against exactly those: a call that starts before midnight and ends after it is
charged to the day it was admitted under, and leaves no reservation behind in either day. Days and months are
counted in `budget.timezone` (default UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from pipeline.config import BudgetCaps
from pipeline.db.models import BudgetPeriod, Job
from pipeline.db.session import upsert_insert
from pipeline.money import ZERO


class Verdict(StrEnum):
    RESERVED = "reserved"
    WAIT = "wait"  # only in-flight reservations stand in the way: they may settle lower
    BLOCKED = "blocked"  # even with nothing in flight the call would pass the cap


@dataclass(frozen=True)
class Reservation:
    verdict: Verdict
    amount: Decimal = ZERO
    scope: str = ""  # which cap refused: "job" | "day:..." | "month:..."
    #: the global periods the amount is reserved in ("day:2026-11-27", "month:2026-11"): settle against these
    periods: tuple[str, ...] = ()


def period_keys(now: datetime, timezone: str = "UTC") -> tuple[str, str]:
    """The day and month periods that naive-UTC `now` falls in, counted in `timezone`."""
    local = now.replace(tzinfo=UTC).astimezone(ZoneInfo(timezone))
    return f"day:{local:%Y-%m-%d}", f"month:{local:%Y-%m}"


def periods(now: datetime, caps: BudgetCaps) -> list[tuple[str, Decimal]]:
    """The capped periods a reservation made at `now` counts against, with their caps."""
    day, month = period_keys(now, caps.timezone)
    out: list[tuple[str, Decimal]] = []
    if caps.daily_usd is not None:
        out.append((day, caps.daily_usd))
    if caps.monthly_usd is not None:
        out.append((month, caps.monthly_usd))
    return out


def _ensure_period(s: Session, period: str, cap: Decimal) -> None:
    ins = upsert_insert(s, BudgetPeriod)
    s.execute(ins.values(period=period, cap_usd=cap, spent_usd=ZERO, reserved_usd=ZERO, alerted_pct=0)
              .on_conflict_do_nothing(index_elements=["period"]))
    s.execute(update(BudgetPeriod).where(BudgetPeriod.period == period, BudgetPeriod.cap_usd != cap)
              .values(cap_usd=cap).execution_options(synchronize_session=False))


def reserve(s: Session, job_id: int, amount: Decimal, caps: BudgetCaps, now: datetime) -> Reservation:
    """Reserve `amount` against the job cap and the global caps, inside the caller's transaction.
    On anything but RESERVED the caller must roll back (nothing is left reserved)."""
    res = s.execute(
        update(Job)
        .where(Job.id == job_id,
               or_(Job.max_usd.is_(None), Job.spent_usd + Job.reserved_usd + amount <= Job.max_usd))
        .values(reserved_usd=Job.reserved_usd + amount)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        spent = s.scalar(select(Job.spent_usd).where(Job.id == job_id)) or ZERO
        cap = s.scalar(select(Job.max_usd).where(Job.id == job_id))
        blocked = cap is not None and spent + amount > cap
        return Reservation(Verdict.BLOCKED if blocked else Verdict.WAIT, scope="job")
    capped = periods(now, caps)
    for period, cap in capped:
        _ensure_period(s, period, cap)
        res = s.execute(
            update(BudgetPeriod)
            .where(BudgetPeriod.period == period,
                   BudgetPeriod.spent_usd + BudgetPeriod.reserved_usd + amount <= BudgetPeriod.cap_usd)
            .values(reserved_usd=BudgetPeriod.reserved_usd + amount)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            spent = s.scalar(select(BudgetPeriod.spent_usd).where(BudgetPeriod.period == period)) or ZERO
            return Reservation(Verdict.BLOCKED if spent + amount > cap else Verdict.WAIT, scope=period)
    return Reservation(Verdict.RESERVED, amount=amount, periods=tuple(p for p, _ in capped))


def settle(s: Session, job_id: int, periods: Sequence[str], reserved: Decimal, cost: Decimal) -> None:
    """Replace a reservation by the real cost (cost may be 0 for a call that was not billed), in the job and in
    exactly the periods the reservation was made against (`Reservation.periods`)."""
    s.execute(update(Job).where(Job.id == job_id)
              .values(reserved_usd=Job.reserved_usd - reserved, spent_usd=Job.spent_usd + cost)
              .execution_options(synchronize_session=False))
    for period in periods:
        s.execute(update(BudgetPeriod).where(BudgetPeriod.period == period)
                  .values(reserved_usd=BudgetPeriod.reserved_usd - reserved,
                          spent_usd=BudgetPeriod.spent_usd + cost)
                  .execution_options(synchronize_session=False))
