"""Claiming job events exactly once, the way budget alerts are claimed (core/alerts.py).

    finished  a run of the job ended and no item failed or was blocked
    failed    a run of the job ended with failed or blocked items
    budget    a budget cap (the job's, the day's or the month's) blocked an item of the run

A claim is the INSERT of the unique (job_id, event, run) row, ON CONFLICT DO NOTHING, inside the transaction
that saw the event happen: the sweeper's compare-and-set of the job from active to done, or an item's move to
blocked. However many workers see the event together, one row exists, so one message goes out. `run` counts
the job's ended runs (a rerun is a new run, with its own events).

Nothing is claimed for a job without any `notify:` (config or manifest). A run's end is always recorded for
such a job (as `skipped` when that event is not wanted), so the run number stays right.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.config import NotifySettings
from pipeline.db.models import Item, Job, Notification
from pipeline.db.session import upsert_insert
from pipeline.states import ItemState

RUN_END_EVENTS = ("finished", "failed")


def effective(config: NotifySettings | None, manifest: dict[str, Any] | None) -> NotifySettings | None:
    """A job's notify settings: the config's, with the keys its manifest gives replaced; None when neither has
    any. (The manifest's block was validated at submit.)"""
    own = (manifest or {}).get("notify")
    if not isinstance(own, dict):
        return config
    given = {k: v for k, v in own.items() if v is not None}
    try:
        if config is None:
            return NotifySettings.model_validate(given)
        return NotifySettings.model_validate({**config.model_dump(), **given})
    except ValidationError:
        return config


def _next_run(s: Session, job_id: int) -> int:
    ended = s.scalar(select(func.count()).select_from(Notification)
                     .where(Notification.job_id == job_id, Notification.event.in_(RUN_END_EVENTS)))
    return int(ended or 0) + 1


def _claim(s: Session, job_id: int, event: str, run: int, wanted: bool, now: datetime) -> bool:
    ins = upsert_insert(s, Notification).values(
        job_id=job_id, event=event, run=run, state="pending" if wanted else "skipped", attempts=0,
        next_attempt_at=now, created_at=now, updated_at=now)
    # RETURNING says whether this insert made the row (rowcount is -1 for it on psycopg)
    res = s.execute(ins.on_conflict_do_nothing(index_elements=["job_id", "event", "run"]).returning(Notification.id))
    return res.first() is not None


def claim_run_end(s: Session, job_ids: Iterable[int], config: NotifySettings | None, now: datetime) -> int:
    """In the transaction that marked these jobs done: claim each one's finished or failed event. Returns the
    events claimed to be sent."""
    ids = list(job_ids)
    if not ids:
        return 0
    manifests: dict[int, dict[str, Any]] = dict(s.execute(select(Job.id, Job.manifest)
                                                          .where(Job.id.in_(ids))).tuples().all())
    bad = dict(s.execute(select(Item.job_id, func.count())
                         .where(Item.job_id.in_(ids), Item.state.in_([ItemState.FAILED, ItemState.BLOCKED]))
                         .group_by(Item.job_id)).tuples().all())
    claimed = 0
    for job_id in ids:
        eff = effective(config, manifests.get(job_id))
        if eff is None:
            continue
        event = "failed" if bad.get(job_id) else "finished"
        wanted = event in eff.on
        if _claim(s, job_id, event, _next_run(s, job_id), wanted, now) and wanted:
            claimed += 1
    return claimed


def claim_budget(s: Session, job_id: int, config: NotifySettings | None, now: datetime) -> bool:
    """In the transaction that blocked an item for budget: claim the run's budget event (the first blocked item
    of the run claims it; the others find it taken)."""
    manifest = s.scalar(select(Job.manifest).where(Job.id == job_id))
    eff = effective(config, manifest)
    if eff is None or "budget" not in eff.on:
        return False
    return _claim(s, job_id, "budget", _next_run(s, job_id), True, now)


def run_end_hook(config: NotifySettings | None) -> Callable[[Session, list[int], datetime], None]:
    """What the sweeper calls with the jobs it just marked done (in its transaction)."""

    def hook(s: Session, job_ids: list[int], now: datetime) -> None:
        claim_run_end(s, job_ids, config, now)

    return hook
