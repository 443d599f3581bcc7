"""Report queries. Money is summed in SQL as Numeric and returned as Decimal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Text, case, cast, func, select
from sqlalchemy.orm import Session

from pipeline.db.models import Attempt, Item, Job, LedgerEntry
from pipeline.money import ZERO, show
from pipeline.review.state import review_counts
from pipeline.states import ACTIVE_STATES, AttemptOutcome, ItemState, JobState

ALL_STATES = [str(s) for s in ItemState]


@dataclass
class Totals:
    images: int = 0
    cache_hits: int = 0
    cost_usd: Decimal = ZERO
    list_cost_usd: Decimal = ZERO

    @property
    def saved_usd(self) -> Decimal:
        return self.list_cost_usd - self.cost_usd

    def as_json(self) -> dict[str, Any]:
        return {"images": self.images, "cache_hits": self.cache_hits, "cost_usd": show(self.cost_usd),
                "list_cost_usd": show(self.list_cost_usd), "saved_usd": show(self.saved_usd)}


@dataclass
class JobSummary:
    job_id: int
    name: str
    state: str
    counts: dict[str, int]
    totals: Totals
    by_provider: dict[str, Totals] = field(default_factory=dict)
    by_resolution: dict[str, Totals] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: calls whose outcome is unknown (timeouts, crashes, unreadable answers): they may have been billed
    maybe_billed_calls: int = 0
    #: succeeded/cached items whose image is paid for but waits in a spool of this host, not yet in storage
    #: (filled by services.summary(with_spool=True); None when not looked at)
    spooled_items: int | None = None
    #: the first of those items' ids
    spooled_keys: list[str] = field(default_factory=list)

    @property
    def stored_items(self) -> int:
        """Succeeded and cached items whose image is in storage (spooled ones not counted)."""
        return self.counts.get("succeeded", 0) + self.counts.get("cached", 0) - (self.spooled_items or 0)
    #: review counts over the job's items: {"approved", "rejected", "unreviewed"}
    review: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return all(self.counts.get(str(s), 0) == 0 for s in ACTIVE_STATES)

    @property
    def cache_hit_rate(self) -> float | None:
        """Share of delivered images (ledger rows) answered from the cache; None before any."""
        delivered = self.totals.images + self.totals.cache_hits
        return self.totals.cache_hits / delivered if delivered else None

    def as_json(self) -> dict[str, Any]:
        t = self.totals
        return {
            "job_id": self.job_id, "job": self.name, "state": self.state, "counts": self.counts,
            "cost_usd": show(t.cost_usd), "list_cost_usd": show(t.list_cost_usd), "saved_usd": show(t.saved_usd),
            "images": t.images, "cache_hits": t.cache_hits,
            "cache_hit_rate": None if self.cache_hit_rate is None else round(self.cache_hit_rate, 4),
            "by_provider": {k: v.as_json() for k, v in self.by_provider.items()},
            "by_resolution": {k: v.as_json() for k, v in self.by_resolution.items()},
            "failures": [{"item": k, "reason": r} for k, r in self.failures],
            "maybe_billed_calls": self.maybe_billed_calls,
            **({} if self.spooled_items is None else {
                "stored_items": self.stored_items, "spooled_items": self.spooled_items,
                "spooled": list(self.spooled_keys)}),
            "review": self.review or {"approved": 0, "rejected": 0, "unreviewed": sum(self.counts.values())},
        }


def _totals_by(s: Session, group: Any, *where: Any) -> dict[str, Totals]:
    rows = s.execute(
        select(group,
               func.sum(case((LedgerEntry.kind == "image", 1), else_=0)),
               func.sum(case((LedgerEntry.kind == "cache_hit", 1), else_=0)),
               func.coalesce(func.sum(LedgerEntry.cost_usd), ZERO),
               func.coalesce(func.sum(LedgerEntry.list_cost_usd), ZERO))
        .where(*where).group_by(group).order_by(group))
    return {str(k): Totals(int(i or 0), int(c or 0), Decimal(cost), Decimal(lst)) for k, i, c, cost, lst in rows}


def _sum(parts: dict[str, Totals]) -> Totals:
    t = Totals()
    for p in parts.values():
        t.images += p.images
        t.cache_hits += p.cache_hits
        t.cost_usd += p.cost_usd
        t.list_cost_usd += p.list_cost_usd
    return t


def counts(s: Session, job_id: int) -> dict[str, int]:
    out = dict.fromkeys(ALL_STATES, 0)
    for state, n in s.execute(select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)):
        out[str(state)] = int(n)
    return out


def job_state(job: Job, c: dict[str, int]) -> str:
    if job.state in (JobState.CANCELLED, JobState.PAUSED):
        return str(job.state)
    if any(c.get(str(st), 0) for st in ACTIVE_STATES):
        return "running"
    return "failed" if c.get("failed", 0) or c.get("blocked", 0) else "succeeded"


def job_summary(s: Session, job: Job, *, since: datetime | None = None, until: datetime | None = None,
                failures: int = 20) -> JobSummary:
    """Counts from the items' current states; money from the ledger (since `since`, e.g. this run's start,
    and before `until`)."""
    where = [LedgerEntry.job_id == job.id, *_period(since, until)]
    by_provider = _totals_by(s, LedgerEntry.provider, *where)
    by_resolution = _totals_by(s, LedgerEntry.resolution, *where)
    c = counts(s, job.id)
    fails = [(k, r or "") for k, r in s.execute(
        select(Item.key, Item.failure_reason).where(Item.job_id == job.id,
                                                    Item.state.in_([ItemState.FAILED, ItemState.BLOCKED]))
        .order_by(Item.id).limit(failures))]
    unknown = [Attempt.job_id == job.id, Attempt.maybe_billed.is_(True), Attempt.cost_usd.is_(None),
               Attempt.outcome != AttemptOutcome.STARTED]
    if since is not None:
        unknown.append(Attempt.started_at >= since)
    if until is not None:
        unknown.append(Attempt.started_at < until)
    maybe = s.scalar(select(func.count()).select_from(Attempt).where(*unknown)) or 0
    return JobSummary(job.id, job.name, job_state(job, c), c, _sum(by_provider), by_provider, by_resolution, fails,
                      int(maybe), review=review_counts(s, job.id))


#: what `pipeline report --by` accepts
GROUPINGS = ("provider", "day", "tag", "resolution", "job")
#: the group of ledger rows whose item has no tag
NO_TAG = "(no tag)"


def _period(since: datetime | None, until: datetime | None) -> list[Any]:
    where: list[Any] = []
    if since is not None:
        where.append(LedgerEntry.created_at >= since)
    if until is not None:
        where.append(LedgerEntry.created_at < until)
    return where


def ledger_report(s: Session, by: str, *, job_id: int | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> dict[str, Totals]:
    """Totals grouped by provider, day, tag, resolution or job, filtered by job and time [since, until).

    By tag, a row counts under each of its item's tags (so the groups may add up to more than the total)
    and under NO_TAG when the item has none."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}")
    where = _period(since, until)
    if job_id is not None:
        where.append(LedgerEntry.job_id == job_id)
    if by == "tag":
        return _totals_by_tag(s, where)
    groups: dict[str, Any] = {"provider": LedgerEntry.provider, "day": LedgerEntry.day,
                              "resolution": LedgerEntry.resolution, "job": Job.name}
    if by == "job":
        where.append(Job.id == LedgerEntry.job_id)
    return _totals_by(s, groups[by], *where)


def _totals_by_tag(s: Session, where: list[Any]) -> dict[str, Totals]:
    """Sums in SQL per distinct tag list (items.tags as JSON text, portable across SQLite and Postgres), then
    spread over the tags in Python: few distinct lists, so exact and fast on any number of rows."""
    tags_text = cast(Item.tags, Text)
    where = [*where, Item.id == LedgerEntry.item_id]
    per_list = _totals_by(s, tags_text, *where)
    out: dict[str, Totals] = {}
    for text, part in per_list.items():
        try:
            tags = [str(t) for t in json.loads(text)] if text and text != "None" else []
        except ValueError:
            tags = []
        for tag in dict.fromkeys(tags) or [NO_TAG]:
            acc = out.setdefault(tag, Totals())
            acc.images += part.images
            acc.cache_hits += part.cache_hits
            acc.cost_usd += part.cost_usd
            acc.list_cost_usd += part.list_cost_usd
    return dict(sorted(out.items(), key=lambda kv: (kv[0] == NO_TAG, kv[0])))


def ledger_totals(s: Session, *, job_id: int | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> Totals:
    """The ledger's totals for the same filters as ledger_report (each row once)."""
    where = _period(since, until)
    if job_id is not None:
        where.append(LedgerEntry.job_id == job_id)
    row = s.execute(
        select(func.sum(case((LedgerEntry.kind == "image", 1), else_=0)),
               func.sum(case((LedgerEntry.kind == "cache_hit", 1), else_=0)),
               func.coalesce(func.sum(LedgerEntry.cost_usd), ZERO),
               func.coalesce(func.sum(LedgerEntry.list_cost_usd), ZERO)).where(*where)).one()
    return Totals(int(row[0] or 0), int(row[1] or 0), Decimal(row[2]), Decimal(row[3]))
