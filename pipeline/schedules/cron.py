"""Cron arithmetic for schedules. Pure functions: times in and out are naive UTC (like every column), the cron
is read on the wall clock of the schedule's time zone (zoneinfo), so "0 6 * * 1" in Europe/Berlin is 06:00
Berlin time in winter and in summer.

Daylight saving time:
- a wall-clock time that does not exist (spring forward, e.g. 02:30) fires once, at the first instant after
  the gap (03:00 local);
- a wall-clock time that happens twice (autumn, e.g. 02:30) fires once, at its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

#: a fire picked up later than this after its time counts as missed (the `skip` policy drops it)
MISFIRE_GRACE_S = 300.0
#: cron steps looked at when searching for the previous fire time (a few suffice; DST repeats are skipped)
MAX_STEPS = 16
#: template variable `schedule` of a run started by hand (`pipeline run`, `submit`), not by a schedule
MANUAL = "manual"


@dataclass(frozen=True)
class Run:
    """One fire of a schedule: the time it is for and what its job sees."""

    schedule: str
    #: the cron time (naive UTC)
    fire_time: datetime
    timezone: str
    #: appended to the manifest's job name: the local date, or date and time when the cron fires more than daily
    job_suffix: str

    @property
    def local_time(self) -> datetime:
        return to_local(self.fire_time, self.timezone)

    def template_vars(self) -> dict[str, str]:
        """`run_date` (YYYY-MM-DD in the schedule's zone), `run_at` (ISO with offset), `schedule` (its name)."""
        local = self.local_time
        return {"run_date": local.date().isoformat(), "run_at": local.isoformat(), "schedule": self.schedule}


def to_local(t: datetime, timezone: str) -> datetime:
    """Naive UTC -> aware time in `timezone`."""
    return t.replace(tzinfo=UTC).astimezone(ZoneInfo(timezone))


def to_utc(t: datetime) -> datetime:
    """Aware -> naive UTC."""
    return t.astimezone(UTC).replace(tzinfo=None)


def _repeated(t: datetime, tz: ZoneInfo) -> bool:
    """True for the second occurrence of an ambiguous wall-clock time (the hour repeated in autumn)."""
    wall = t.astimezone(tz).replace(tzinfo=None)
    first = wall.replace(tzinfo=tz, fold=0)
    if first.utcoffset() == wall.replace(tzinfo=tz, fold=1).utcoffset():
        return False
    return t.astimezone(UTC) != first.astimezone(UTC)


def latest_fire(cron: str, timezone: str, now: datetime) -> datetime | None:
    """The latest fire time at or before `now` (naive UTC), or None if the cron never fired (impossible date)."""
    tz = ZoneInfo(timezone)
    try:
        it = croniter(cron, to_local(now + timedelta(seconds=1), timezone))
        for _ in range(MAX_STEPS):
            t = it.get_prev(datetime)
            if _repeated(t, tz):
                continue
            if to_utc(t) <= now:
                return to_utc(t)
    except CroniterError:
        return None
    return None


def next_fire(cron: str, timezone: str, after: datetime) -> datetime | None:
    """The first fire time strictly after `after` (naive UTC), or None if there is none."""
    tz = ZoneInfo(timezone)
    try:
        it = croniter(cron, to_local(after, timezone))
        for _ in range(MAX_STEPS):
            t = it.get_next(datetime)
            if not _repeated(t, tz) and to_utc(t) > after:
                return to_utc(t)
    except CroniterError:
        return None
    return None


def more_than_daily(cron: str) -> bool:
    """Whether the cron can fire more than once on a day (several minutes, hours or seconds in its fields)."""
    fields = croniter(cron).expanded
    minutes, hours = fields[0], fields[1]
    seconds = fields[5] if len(fields) > 5 else [0]
    return any(len(f) > 1 or f == ["*"] for f in (minutes, hours, seconds))


def make_run(schedule: str, cron: str, timezone: str, fire_time: datetime) -> Run:
    local = to_local(fire_time, timezone)
    suffix = local.strftime("%Y%m%d%H%M") if more_than_daily(cron) else local.date().isoformat()
    return Run(schedule=schedule, fire_time=fire_time, timezone=timezone, job_suffix=suffix)


def manual_run_vars(now: datetime, timezone: str | None = None) -> dict[str, str]:
    """Template variables of a run started by hand: today in the manifest's schedule zone (or UTC)."""
    local = to_local(now, timezone or "UTC")
    return {"run_date": local.date().isoformat(), "run_at": local.isoformat(timespec="seconds"),
            "schedule": MANUAL}
