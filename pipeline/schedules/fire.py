"""Firing schedules: `fire_due(sessions, now, load_run)` submits each due run exactly once.

Exactly once, with any number of beats and across restarts: a fire is a row in `schedule_fires`, unique on
(schedule_name, fire_time), inserted inside the very transaction that submits the run's job (core.submit's
`in_transaction`). Both commit or neither does, so a crash between them cannot lose or double a run; two beats
racing for the same fire both build the run, one commits, the other's transaction fails on the unique row (or
on the job's unique name before it) and rolls back whole.

When is a run due: the schedule's latest cron time at or before `now` is after `handled_through` (its position:
the last fire time handled, or when it was added or resumed). Only that latest time can fire; older times
that passed while no beat ran are dropped. Its `missed` policy decides about the latest one when it is late
by more than MISFIRE_GRACE_S:
    run-once (default)  it fires (once) when a beat starts again
    skip                it is recorded as skipped; the schedule waits for its next time
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.core.submit import JobSpec, SpecLike, submit
from pipeline.db.models import Schedule, ScheduleFire
from pipeline.errors import PipelineError
from pipeline.schedules.cron import MISFIRE_GRACE_S, Run, latest_fire, make_run
from pipeline.schedules.store import Missed

log = logging.getLogger("pipeline.schedules")


class LoadedRun(Protocol):
    """What fire_due submits (pipeline.services.Loaded)."""

    @property
    def job(self) -> JobSpec: ...
    @property
    def specs(self) -> Sequence[SpecLike]: ...


#: loads a schedule's manifest for one run: (manifest path, run) -> the job and its items
LoadRun = Callable[[Path, Run], LoadedRun]


class FireOutcome(StrEnum):
    SUBMITTED = "submitted"  # this call submitted the run
    SKIPPED = "skipped"  # missed (late beyond the grace) under `missed: skip`
    ALREADY = "already"  # another beat (or an earlier start) handled this fire time
    ERROR = "error"  # the manifest could not be loaded; retried on a later call


@dataclass(frozen=True)
class Fire:
    schedule: str
    fire_time: datetime
    outcome: FireOutcome
    job_name: str | None = None
    job_id: int | None = None
    late_s: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class _Sched:
    name: str
    manifest_path: str
    cron: str
    timezone: str
    missed: str
    handled_through: datetime


def due_time(cron: str, timezone: str, handled_through: datetime, now: datetime) -> datetime | None:
    """The fire time due at `now`, if any: the latest cron time at or before `now`, when after `handled_through`."""
    latest = latest_fire(cron, timezone, now)
    return latest if latest is not None and latest > handled_through else None


def fire_due(sessions: sessionmaker[Session], now: datetime, load_run: LoadRun, *,
             grace_s: float = MISFIRE_GRACE_S, exclude: Collection[str] = ()) -> list[Fire]:
    """Fire every active schedule whose time has come (see the module docstring). Safe to call from any number
    of threads and processes at once. `exclude` names schedules to leave for now (ones that failed to load)."""
    with sessions() as s:
        scheds = [_Sched(r.name, r.manifest_path, r.cron, r.timezone, r.missed, r.handled_through)
                  for r in s.scalars(select(Schedule).where(Schedule.paused.is_(False)).order_by(Schedule.name))
                  if r.name not in exclude]
    out = []
    for sc in scheds:
        fire_time = due_time(sc.cron, sc.timezone, sc.handled_through, now)
        if fire_time is not None:
            out.append(_fire(sessions, sc, make_run(sc.name, sc.cron, sc.timezone, fire_time), now, load_run,
                             grace_s))
    return out


def _advance(s: Session, name: str, fire_time: datetime, now: datetime, *, fired: bool) -> None:
    values: dict[str, object] = {"handled_through": fire_time, "updated_at": now}
    if fired:
        values["last_fired_at"] = fire_time
    s.execute(update(Schedule).where(Schedule.name == name, Schedule.handled_through < fire_time).values(**values))


def _fire_exists(s: Session, name: str, fire_time: datetime) -> bool:
    return bool(s.scalar(select(exists().where(ScheduleFire.schedule_name == name,
                                               ScheduleFire.fire_time == fire_time))))


def _record(sessions: sessionmaker[Session], sc: _Sched, run: Run, now: datetime, *, skipped: bool) -> bool:
    """Catch up on a fire time another beat handled, or record a skipped one. False if it was handled already."""
    try:
        with sessions.begin() as s:
            done = _fire_exists(s, sc.name, run.fire_time)
            if skipped and not done:
                s.add(ScheduleFire(schedule_name=sc.name, fire_time=run.fire_time, outcome="skipped",
                                   created_at=now))
                s.flush()
            _advance(s, sc.name, run.fire_time, now, fired=False)
            return not done
    except IntegrityError:
        return False


def _fire(sessions: sessionmaker[Session], sc: _Sched, run: Run, now: datetime, load_run: LoadRun,
          grace_s: float) -> Fire:
    late_s = (now - run.fire_time).total_seconds()
    with sessions() as s:
        done = _fire_exists(s, sc.name, run.fire_time)
    if done:
        _record(sessions, sc, run, now, skipped=False)
        return Fire(sc.name, run.fire_time, FireOutcome.ALREADY, late_s=late_s)
    if sc.missed == Missed.SKIP and late_s > grace_s:
        recorded = _record(sessions, sc, run, now, skipped=True)
        if recorded:
            log.warning("schedule %s: %s was missed by %.0f s; skipped (missed: skip)", sc.name,
                        run.local_time.isoformat(), late_s)
        return Fire(sc.name, run.fire_time, FireOutcome.SKIPPED if recorded else FireOutcome.ALREADY,
                    late_s=late_s)
    try:
        loaded = load_run(Path(sc.manifest_path), run)
    except PipelineError as e:
        log.error("schedule %s: run for %s not submitted: %s", sc.name, run.local_time.isoformat(), e)
        return Fire(sc.name, run.fire_time, FireOutcome.ERROR, late_s=late_s, detail=str(e))

    def record(s: Session, job_id: int) -> None:
        s.add(ScheduleFire(schedule_name=sc.name, fire_time=run.fire_time, outcome="submitted", job_id=job_id,
                           job_name=loaded.job.name, created_at=now))
        s.flush()  # the unique (schedule_name, fire_time) decides here, before any item is written
        _advance(s, sc.name, run.fire_time, now, fired=True)

    try:
        res = submit(sessions, loaded.job, loaded.specs, now, in_transaction=record)
    except IntegrityError:
        with sessions() as s:
            if not _fire_exists(s, sc.name, run.fire_time):
                raise
        return Fire(sc.name, run.fire_time, FireOutcome.ALREADY, late_s=late_s)
    except PipelineError as e:  # refused at submit (another job writes its keys): retried like a load error
        log.error("schedule %s: run for %s not submitted: %s", sc.name, run.local_time.isoformat(), e)
        return Fire(sc.name, run.fire_time, FireOutcome.ERROR, late_s=late_s, detail=str(e))
    log.info("schedule %s: fired %s as job %s (id %s): %s", sc.name, run.local_time.isoformat(), res.name,
             res.job_id, res.summary())
    return Fire(sc.name, run.fire_time, FireOutcome.SUBMITTED, job_name=res.name, job_id=res.job_id,
                late_s=late_s, detail=res.summary())
