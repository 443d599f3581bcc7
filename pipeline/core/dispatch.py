"""The dispatcher: publishes due items (pending, next_attempt_at <= now) to the broker, a bounded window
at a time, after marking them queued with a compare-and-set. The broker carries item ids only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.core import lifecycle
from pipeline.db.models import Item, Job
from pipeline.states import ItemState, JobState

Publish = Callable[[Sequence[int]], None]


def dispatch_once(sessions: sessionmaker[Session], publish: Publish, now: datetime, *, max_queued: int,
                  job_id: int | None = None) -> int:
    """Queue and publish up to the free part of the window; returns how many were published."""
    with sessions.begin() as s:
        queued = s.scalar(select(func.count()).select_from(Item).where(Item.state == ItemState.QUEUED)) or 0
        room = max_queued - queued
        if room <= 0:
            return 0
        q = (select(Item.id)
             .join(Job, Job.id == Item.job_id)
             .where(Item.state == ItemState.PENDING, Item.next_attempt_at <= now, Job.state == JobState.ACTIVE,
                    Job.batch.is_(False))
             .order_by(Item.next_attempt_at, Item.id)
             .limit(room))
        if job_id is not None:
            q = q.where(Item.job_id == job_id)
        if s.get_bind().dialect.name == "postgresql":
            q = q.with_for_update(of=Item, skip_locked=True)
        ids = list(s.scalars(q))
        if not ids:
            return 0
        lifecycle.queue(s, ids, now)
    # published after commit: a message for an item that is not queued yet would be refused by the claim
    try:
        publish(ids)
    except Exception:
        # the broker is unreachable: put the items back at once rather than leave them queued until the sweeper's
        # queued_timeout_s (a message that did go out before the failure is harmless: the claim decides)
        with sessions.begin() as s:
            lifecycle.unqueue(s, now, ids=ids, queued_at=now)
        raise
    return len(ids)
