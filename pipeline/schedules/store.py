"""The schedules table: add (or update), list, remove, pause, resume. Plain functions over a sessionmaker."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.models import Schedule, ScheduleFire
from pipeline.errors import InputError
from pipeline.schedules.cron import next_fire

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Missed(StrEnum):
    """What happens to fire times that passed while no beat was running."""

    RUN_ONCE = "run-once"  # the latest missed time fires once when a beat starts; older ones are dropped
    SKIP = "skip"  # missed times are dropped; the schedule waits for its next time


@dataclass(frozen=True)
class ScheduleView:
    name: str
    manifest_path: str
    cron: str
    timezone: str
    missed: str
    paused: bool
    created_at: datetime
    handled_through: datetime
    last_fired_at: datetime | None
    last_job: str | None
    next_fire_at: datetime | None

    def as_json(self) -> dict[str, object]:
        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat() + "Z"

        return {"name": self.name, "manifest": self.manifest_path, "cron": self.cron, "timezone": self.timezone,
                "missed": self.missed, "state": "paused" if self.paused else "active",
                "created_at": iso(self.created_at), "last_fired_at": iso(self.last_fired_at),
                "last_job": self.last_job, "next_fire_at": iso(self.next_fire_at)}


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(f"schedule name {name[:60]!r}: letters, digits, '.', '_' and '-', starting with a letter "
                         "or digit, at most 128 characters", where="--name")
    return name


def add(sessions: sessionmaker[Session], *, name: str, manifest_path: str, cron: str, timezone: str,
        missed: Missed, now: datetime) -> bool:
    """Register a schedule, or update the one of that name (its fire history and position are kept).
    Fire times at or before `now` are never fired for a new schedule. Returns True when it was created."""
    check_name(name)
    with sessions.begin() as s:
        row = s.scalar(select(Schedule).where(Schedule.name == name).with_for_update())
        if row is None:
            s.add(Schedule(name=name, manifest_path=manifest_path, cron=cron, timezone=timezone, missed=missed,
                           paused=False, handled_through=now, created_at=now, updated_at=now))
            return True
        row.manifest_path, row.cron, row.timezone, row.missed, row.updated_at = (
            manifest_path, cron, timezone, str(missed), now)
        return False


def _get(s: Session, name: str) -> Schedule:
    row = s.scalar(select(Schedule).where(Schedule.name == name).with_for_update())
    if row is None:
        known = ", ".join(s.scalars(select(Schedule.name).order_by(Schedule.name))) or "none"
        raise InputError(f"no schedule named {name!r} (schedules: {known})", where=name)
    return row


def remove(sessions: sessionmaker[Session], name: str) -> None:
    """Delete a schedule. Its fire history stays, so adding it again never fires a time twice."""
    with sessions.begin() as s:
        _get(s, name)
        s.execute(delete(Schedule).where(Schedule.name == name))


def set_paused(sessions: sessionmaker[Session], name: str, now: datetime, *, paused: bool) -> None:
    """Pause or resume. Fire times that pass while a schedule is paused are not run: resuming moves its position
    to `now`, whatever its missed policy."""
    with sessions.begin() as s:
        row = _get(s, name)
        if row.paused and not paused:
            row.handled_through = max(row.handled_through, now)
        row.paused = paused
        row.updated_at = now


def list_schedules(sessions: sessionmaker[Session], now: datetime) -> list[ScheduleView]:
    with sessions() as s:
        rows = list(s.scalars(select(Schedule).order_by(Schedule.name)))
        last = {name: job for name, job in s.execute(
            select(Schedule.name, ScheduleFire.job_name)
            .join(ScheduleFire, (ScheduleFire.schedule_name == Schedule.name)
                  & (ScheduleFire.fire_time == Schedule.last_fired_at)))}
    out = []
    for r in rows:
        nxt = None if r.paused else next_fire(r.cron, r.timezone, max(now, r.handled_through))
        out.append(ScheduleView(r.name, r.manifest_path, r.cron, r.timezone, r.missed, r.paused, r.created_at,
                                r.handled_through, r.last_fired_at, last.get(r.name), nxt))
    return out


def fires(sessions: sessionmaker[Session], name: str | None = None) -> list[ScheduleFire]:
    """Fire history, oldest first (for tests and `schedule list --json`)."""
    with sessions() as s:
        q = select(ScheduleFire).order_by(ScheduleFire.fire_time, ScheduleFire.id)
        if name is not None:
            q = q.where(ScheduleFire.schedule_name == name)
        rows = list(s.scalars(q))
        s.expunge_all()
        return rows

