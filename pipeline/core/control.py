"""Job control: rerun (failed, named items, or all with --force), cancel, pause, resume."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.core import lifecycle
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
        keys: list[str] | None = None
        states: frozenset[ItemState] = frozenset({ItemState.FAILED, ItemState.BLOCKED})  # --failed, the default
        if items:
            known = set(s.scalars(select(Item.key).where(Item.job_id == job.id, Item.key.in_(list(items)))))
            missing = [k for k in items if k not in known]
            if missing:
                raise InputError(f"no such item(s) in job {job.name}: {', '.join(missing)}", where="--items")
            keys, states = list(items), FINAL_STATES
        elif all_items:
            states = FINAL_STATES
        n = lifecycle.reset(s, now, job_id=job.id, keys=keys, states=states, force=force)
        job.state = JobState.ACTIVE
        job.updated_at = now
        return job.id, n


def cancel(sessions: sessionmaker[Session], ref: str, now: datetime) -> tuple[int, int]:
    """Cancel a job: items not started are cancelled; calls in flight finish and are recorded."""
    with sessions.begin() as s:
        job = find_job(s, ref)
        job.state = JobState.CANCELLED
        job.updated_at = now
        return job.id, lifecycle.cancel(s, job.id, now)


def set_paused(sessions: sessionmaker[Session], ref: str, now: datetime, *, paused: bool) -> int:
    """Pause (nothing new starts; in-flight calls finish) or resume a job."""
    with sessions.begin() as s:
        job = find_job(s, ref)
        if job.state in (JobState.ACTIVE, JobState.PAUSED, JobState.DONE):
            job.state = JobState.PAUSED if paused else JobState.ACTIVE
            job.updated_at = now
        if not paused:
            # queued items of a paused job were never claimed; make them due again
            lifecycle.unqueue(s, now, job_id=job.id)
        return job.id
