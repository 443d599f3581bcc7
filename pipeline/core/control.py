"""Job control: rerun (failed, named items, or all with --force), cancel, pause, resume."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.models import Item, Job
from pipeline.errors import InputError
from pipeline.states import FINAL_STATES, ItemState, JobState


def find_job(s: Session, ref: str) -> Job:
    """A job by id or by name; InputError naming the reference when there is none."""
    job = s.get(Job, int(ref)) if ref.isdigit() else None
    if job is None:
        job = s.scalar(select(Job).where(Job.name == ref))
    if job is None:
        raise InputError(f"no such job {ref!r}", where="JOB")
    return job


def rerun(sessions: sessionmaker[Session], ref: str, now: datetime, *, failed: bool = False,
          items: Sequence[str] = (), all_items: bool = False, force: bool = False) -> tuple[int, int]:
    """Reset the chosen final items to pending. Returns (job_id, items reset). Default: failed and blocked."""
    with sessions.begin() as s:
        job = find_job(s, ref)
        q = update(Item).where(Item.job_id == job.id)
        if items:
            known = set(s.scalars(select(Item.key).where(Item.job_id == job.id, Item.key.in_(list(items)))))
            missing = [k for k in items if k not in known]
            if missing:
                raise InputError(f"no such item(s) in job {job.name}: {', '.join(missing)}", where="--items")
            q = q.where(Item.key.in_(list(items)), Item.state.in_([str(x) for x in FINAL_STATES]))
        elif all_items:
            q = q.where(Item.state.in_([str(x) for x in FINAL_STATES]))
        else:  # --failed, the default
            q = q.where(Item.state.in_([ItemState.FAILED, ItemState.BLOCKED]))
        res = s.execute(q.values(state=ItemState.PENDING, attempts=0, next_attempt_at=now, failure_reason=None,
                                 lease_owner=None, lease_expires_at=None, queued_at=None, finished_at=None,
                                 provider_index=0, force=force, updated_at=now)
                        .execution_options(synchronize_session=False))
        job.state = JobState.ACTIVE
        job.updated_at = now
        return job.id, int(res.rowcount)  # type: ignore[attr-defined]


def cancel(sessions: sessionmaker[Session], ref: str, now: datetime) -> tuple[int, int]:
    """Cancel a job: items not started are cancelled; calls in flight finish and are recorded."""
    with sessions.begin() as s:
        job = find_job(s, ref)
        job.state = JobState.CANCELLED
        job.updated_at = now
        res = s.execute(update(Item)
                        .where(Item.job_id == job.id, Item.state.in_([ItemState.PENDING, ItemState.QUEUED]))
                        .values(state=ItemState.CANCELLED, finished_at=now, failure_reason="cancelled",
                                updated_at=now)
                        .execution_options(synchronize_session=False))
        return job.id, int(res.rowcount)  # type: ignore[attr-defined]


def set_paused(sessions: sessionmaker[Session], ref: str, now: datetime, *, paused: bool) -> int:
    """Pause (nothing new starts; in-flight calls finish) or resume a job."""
    with sessions.begin() as s:
        job = find_job(s, ref)
        if job.state in (JobState.ACTIVE, JobState.PAUSED, JobState.DONE):
            job.state = JobState.PAUSED if paused else JobState.ACTIVE
            job.updated_at = now
        if not paused:
            # queued items of a paused job were never claimed; make them due again
            s.execute(update(Item).where(Item.job_id == job.id, Item.state == ItemState.QUEUED)
                      .values(state=ItemState.PENDING, queued_at=None, updated_at=now)
                      .execution_options(synchronize_session=False))
        return job.id
