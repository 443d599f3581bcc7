"""The sweeper: expired leases and stale queue entries go back to pending; open attempts of an expired lease
become 'abandoned' (outcome unknown, maybe billed); finished jobs are marked done."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.models import Attempt, CacheEntry, Item, Job
from pipeline.states import ACTIVE_STATES, AttemptOutcome, CacheState, ItemState, JobState


@dataclass(frozen=True)
class SweepResult:
    expired_leases: int
    requeued: int
    abandoned_attempts: int
    jobs_done: int


def sweep(sessions: sessionmaker[Session], now: datetime, *, queued_timeout_s: float) -> SweepResult:
    with sessions.begin() as s:
        expired = list(s.execute(select(Item.id, Item.lease_owner)
                                 .where(Item.state == ItemState.RUNNING, Item.lease_expires_at < now)))
        abandoned = 0
        for item_id, owner in expired:
            res = s.execute(update(Attempt)
                            .where(Attempt.item_id == item_id, Attempt.lease_owner == owner,
                                   Attempt.outcome == AttemptOutcome.STARTED)
                            .values(outcome=AttemptOutcome.ABANDONED, finished_at=now, maybe_billed=True)
                            .execution_options(synchronize_session=False))
            abandoned += res.rowcount  # type: ignore[attr-defined]
            s.execute(update(Item)
                      .where(Item.id == item_id, Item.state == ItemState.RUNNING, Item.lease_owner == owner)
                      .values(state=ItemState.PENDING, lease_owner=None, lease_expires_at=None, next_attempt_at=now,
                              updated_at=now)
                      .execution_options(synchronize_session=False))
        stale = now - timedelta(seconds=queued_timeout_s)
        requeued = s.execute(update(Item)
                             .where(Item.state == ItemState.QUEUED, Item.queued_at < stale)
                             .values(state=ItemState.PENDING, queued_at=None, updated_at=now)
                             .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
        # reservations whose owner ended without an image (crash between call and settle, cancel): free them
        s.execute(delete(CacheEntry).where(
            CacheEntry.state == CacheState.PENDING,
            ~exists().where(and_(Item.id == CacheEntry.owner_item_id, Item.state.in_(list(ACTIVE_STATES)))),
        ).execution_options(synchronize_session=False))
        done = s.execute(update(Job)
                         .where(Job.state == JobState.ACTIVE,
                                ~exists().where(and_(Item.job_id == Job.id, Item.state.in_(list(ACTIVE_STATES)))))
                         .values(state=JobState.DONE, updated_at=now)
                         .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    return SweepResult(len(expired), int(requeued), abandoned, int(done))
