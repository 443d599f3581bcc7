"""The sweeper: expired leases and stale queue entries go back to pending; open attempts of an expired lease
become 'abandoned' (outcome unknown, maybe billed); finished jobs are marked done.

An item given back (`give_back`: its lease expired, or its worker hit an unexpected error) also gives back
the budget it reserved: counted as spent when a call of it may have been billed (an open attempt), so a cap
holds even for calls whose outcome is unknown, released otherwise. A late settle of such a call corrects
the spent amount to the real cost (settle.settle_budget).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from pipeline.core import budget, lifecycle
from pipeline.db.models import Attempt, CacheEntry, Item, Job
from pipeline.money import ZERO
from pipeline.states import ACTIVE_STATES, AttemptOutcome, CacheState, ItemState, JobState


@dataclass(frozen=True)
class SweepResult:
    expired_leases: int
    requeued: int
    abandoned_attempts: int
    jobs_done: int


def give_back(s: Session, item_id: int, owner: str, now: datetime, *,
              next_attempt_at: datetime | None = None) -> int | None:
    """Return an item `owner` runs to pending, in the caller's transaction: its open attempts become abandoned
    (maybe billed) and its budget reservation is settled (spent if a call may have been billed, else
    released). Returns the attempts abandoned, or None when `owner` does not hold the item."""
    # rows in the order a worker's settle takes them (attempt, job, item), so the two cannot deadlock
    res = s.execute(update(Attempt)
                    .where(Attempt.item_id == item_id, Attempt.lease_owner == owner,
                           Attempt.outcome == AttemptOutcome.STARTED,
                           exists().where(Item.id == item_id, Item.state == ItemState.RUNNING,
                                          Item.lease_owner == owner))
                    .values(outcome=AttemptOutcome.ABANDONED, finished_at=now, maybe_billed=True)
                    .execution_options(synchronize_session=False))
    abandoned = int(res.rowcount)  # type: ignore[attr-defined]
    row = s.execute(select(Item.job_id, Item.reserved_usd, Item.reserved_periods)
                    .where(Item.id == item_id, Item.state == ItemState.RUNNING, Item.lease_owner == owner)).first()
    if row is None:
        return None
    job_id, reserved, periods = row
    if reserved:  # in the periods it was reserved in, whatever day it is now
        budget.settle(s, job_id, list(periods or ()), reserved, reserved if abandoned else ZERO)
    lifecycle.give_back(s, item_id, owner, next_attempt_at or now, now)
    return abandoned


#: called in the sweep's transaction with the jobs it just marked done (job notifications claim their events)
OnJobsDone = Callable[[Session, list[int], datetime], None]


def sweep(sessions: sessionmaker[Session], now: datetime, *, queued_timeout_s: float,
          on_done: OnJobsDone | None = None) -> SweepResult:
    with sessions.begin() as s:
        expired = list(s.execute(select(Item.id, Item.lease_owner)
                                 .where(Item.state == ItemState.RUNNING, Item.lease_expires_at < now)))
        abandoned = 0
        for item_id, owner in expired:
            abandoned += give_back(s, item_id, owner or "", now) or 0
        stale = now - timedelta(seconds=queued_timeout_s)
        requeued = lifecycle.unqueue(s, now, queued_before=stale)
        # reservations whose owner ended without an image (crash between call and settle, cancel): free them
        s.execute(delete(CacheEntry).where(
            CacheEntry.state == CacheState.PENDING,
            ~exists().where(and_(Item.id == CacheEntry.owner_item_id, Item.state.in_(list(ACTIVE_STATES)))),
        ).execution_options(synchronize_session=False))
        done = [int(i) for i in s.scalars(
            update(Job)
            .where(Job.state == JobState.ACTIVE,
                   ~exists().where(and_(Item.job_id == Job.id, Item.state.in_(list(ACTIVE_STATES)))))
            .values(state=JobState.DONE, updated_at=now)
            .returning(Job.id)
            .execution_options(synchronize_session=False))]
        if done and on_done is not None:
            on_done(s, done, now)  # each job's active -> done happened once, here: its run-end event with it
    return SweepResult(len(expired), int(requeued), abandoned, len(done))
