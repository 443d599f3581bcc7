"""The numbers behind the metrics, read in one short session: items by provider and final state, cost by
provider (ledger), provider calls by outcome with 429s and a latency histogram (attempts), queue depth and due
items (index-backed COUNTs), budget use of recent jobs and of the current global periods."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from pipeline.core.budget import period_keys
from pipeline.db.models import Attempt, BudgetPeriod, Item, Job, LedgerEntry
from pipeline.money import ZERO
from pipeline.states import FINAL_STATES, ItemState, JobState

#: upper bounds of the provider request duration histogram, in seconds (calls take 5-30 s; the sandbox less)
DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
#: per-job budget gauges cover unfinished jobs and jobs updated within this long
JOB_WINDOW = timedelta(days=1)
#: provider label of items answered from the cache
CACHE = "cache"
#: provider label of final items that never reached a provider (no provider could take them)
NO_PROVIDER = "none"


@dataclass
class Durations:
    count: int = 0
    sum_s: float = 0.0
    #: cumulative counts, one per DURATION_BUCKETS_S bound
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS_S))


@dataclass(frozen=True)
class JobBudget:
    job: str
    spent_usd: Decimal
    reserved_usd: Decimal
    max_usd: Decimal | None


@dataclass(frozen=True)
class PeriodBudget:
    period: str  # "day" | "month"
    spent_usd: Decimal
    reserved_usd: Decimal
    cap_usd: Decimal | None


@dataclass
class Snapshot:
    #: (provider, final state) -> items
    images: dict[tuple[str, str], int] = field(default_factory=dict)
    cost_usd: dict[str, Decimal] = field(default_factory=dict)
    #: (provider, attempt outcome) -> provider calls
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    rate_limited: dict[str, int] = field(default_factory=dict)
    durations: dict[str, Durations] = field(default_factory=dict)
    queued: int = 0
    running: int = 0
    due: int = 0
    jobs: list[JobBudget] = field(default_factory=list)
    periods: list[PeriodBudget] = field(default_factory=list)


def _images(s: Session) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = defaultdict(int)
    rows = s.execute(select(Item.provider, Item.state, func.count())
                     .where(Item.state.in_([str(x) for x in FINAL_STATES])).group_by(Item.provider, Item.state))
    for provider, state, n in rows:
        label = CACHE if state == ItemState.CACHED else provider or NO_PROVIDER
        out[(label, state)] += int(n)
    return dict(out)


def _attempts(s: Session, snap: Snapshot) -> None:
    ms = Attempt.latency_ms
    limited = case((or_(Attempt.http_status == 429, Attempt.error_class == "rate_limited"), 1), else_=0)
    cols = [Attempt.provider, Attempt.outcome, func.count(), func.sum(limited), func.count(ms), func.sum(ms),
            *(func.sum(case((ms <= int(b * 1000), 1), else_=0)) for b in DURATION_BUCKETS_S)]
    for provider, outcome, n, n429, n_timed, sum_ms, *buckets in s.execute(
            select(*cols).group_by(Attempt.provider, Attempt.outcome)):
        snap.requests[(provider, outcome)] = int(n)
        snap.rate_limited[provider] = snap.rate_limited.get(provider, 0) + int(n429 or 0)
        d = snap.durations.setdefault(provider, Durations())
        d.count += int(n_timed or 0)
        d.sum_s += float(sum_ms or 0) / 1000
        d.buckets = [a + int(b or 0) for a, b in zip(d.buckets, buckets, strict=True)]


def snapshot(s: Session, now: datetime, *, budget_timezone: str = "UTC") -> Snapshot:
    snap = Snapshot(images=_images(s))
    snap.cost_usd = {p: Decimal(c or ZERO) for p, c in s.execute(
        select(LedgerEntry.provider, func.sum(LedgerEntry.cost_usd)).group_by(LedgerEntry.provider))}
    _attempts(s, snap)
    for state, n in s.execute(select(Item.state, func.count())
                              .where(Item.state.in_([ItemState.QUEUED, ItemState.RUNNING])).group_by(Item.state)):
        if state == ItemState.QUEUED:
            snap.queued = int(n)
        else:
            snap.running = int(n)
    snap.due = int(s.scalar(select(func.count()).select_from(Item).where(
        Item.state == ItemState.PENDING, Item.next_attempt_at <= now)) or 0)
    snap.jobs = [JobBudget(name, Decimal(spent), Decimal(reserved), None if cap is None else Decimal(cap))
                 for name, spent, reserved, cap in s.execute(
                     select(Job.name, Job.spent_usd, Job.reserved_usd, Job.max_usd)
                     .where(or_(Job.state.in_([JobState.ACTIVE, JobState.PAUSED]), Job.updated_at >= now - JOB_WINDOW))
                     .order_by(Job.id))]
    day, month = period_keys(now, budget_timezone)  # the budget's own days, in its time zone
    keys = {day: "day", month: "month"}
    snap.periods = [PeriodBudget(keys[p.period], p.spent_usd, p.reserved_usd, p.cap_usd)
                    for p in s.scalars(select(BudgetPeriod).where(BudgetPeriod.period.in_(list(keys))))]
    return snap
