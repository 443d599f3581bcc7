"""The jobs page's rows: every job's counts, cost, saved and review counts in a fixed number of queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.db.models import Item, Job, LedgerEntry
from pipeline.money import ZERO, show
from pipeline.reports.queries import ALL_STATES, job_state
from pipeline.review.state import review_counts_for

#: jobs on one page of the jobs list
JOBS_PER_PAGE = 50
_DONE = ("succeeded", "cached", "failed", "blocked", "cancelled")


@dataclass(frozen=True)
class JobRow:
    id: int
    name: str
    state: str
    counts: dict[str, int]
    cost_usd: Decimal
    list_cost_usd: Decimal
    review: dict[str, int]
    created_at: datetime
    updated_at: datetime

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(self.counts.get(k, 0) for k in _DONE)

    @property
    def saved_usd(self) -> Decimal:
        return self.list_cost_usd - self.cost_usd

    def as_json(self) -> dict[str, Any]:
        return {"job_id": self.id, "job": self.name, "state": self.state, "counts": self.counts, "done": self.done,
                "total": self.total, "cost_usd": show(self.cost_usd), "list_cost_usd": show(self.list_cost_usd),
                "saved_usd": show(self.saved_usd), "review": self.review}


def job_rows(s: Session, *, page: int = 1, per_page: int = JOBS_PER_PAGE,
             ids: list[int] | None = None) -> tuple[list[JobRow], int]:
    """One page of jobs, newest first (or the jobs `ids`), and how many jobs there are."""
    q = select(Job).order_by(Job.id.desc())
    if ids is not None:
        q = q.where(Job.id.in_(ids[:500]))
        total = len(ids)
    else:
        total = int(s.scalar(select(func.count()).select_from(Job)) or 0)
        q = q.offset((max(1, page) - 1) * per_page).limit(per_page)
    jobs = list(s.scalars(q))
    job_ids = [j.id for j in jobs]
    if not job_ids:
        return [], total
    counts: dict[int, dict[str, int]] = {i: dict.fromkeys(ALL_STATES, 0) for i in job_ids}
    for job_id, state, n in s.execute(select(Item.job_id, Item.state, func.count())
                                      .where(Item.job_id.in_(job_ids)).group_by(Item.job_id, Item.state)).tuples():
        counts[int(job_id)][str(state)] = int(n)
    money = {int(j): (Decimal(c), Decimal(lst)) for j, c, lst in s.execute(
        select(LedgerEntry.job_id, func.coalesce(func.sum(LedgerEntry.cost_usd), ZERO),
               func.coalesce(func.sum(LedgerEntry.list_cost_usd), ZERO))
        .where(LedgerEntry.job_id.in_(job_ids)).group_by(LedgerEntry.job_id)).tuples()}
    reviews = review_counts_for(s, job_ids)
    rows = [JobRow(j.id, j.name, job_state(j, counts[j.id]), counts[j.id], *money.get(j.id, (ZERO, ZERO)),
                   reviews[j.id], j.created_at, j.updated_at) for j in jobs]
    return rows, total
