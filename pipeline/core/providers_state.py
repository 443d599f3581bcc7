"""Provider-level state shared by every worker: paused (auth, no credit) or parked (daily quota) until T."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.models import ProviderState
from pipeline.states import ProviderStatus


@dataclass(frozen=True)
class Availability:
    ok: bool
    status: str = ProviderStatus.OK
    reason: str | None = None
    until: datetime | None = None


def availability(s: Session, name: str, now: datetime) -> Availability:
    row = s.get(ProviderState, name)
    if row is None or row.status == ProviderStatus.OK:
        return Availability(True)
    if row.status == ProviderStatus.PARKED and row.until is not None and row.until <= now:
        return Availability(True)
    return Availability(False, row.status, row.reason, row.until)


def set_status(s: Session, name: str, status: str, reason: str | None, until: datetime | None,
               now: datetime) -> None:
    dialect = s.get_bind().dialect.name
    ins = pg_insert(ProviderState) if dialect == "postgresql" else sqlite_insert(ProviderState)
    values = {"name": name, "status": status, "reason": reason, "until": until, "updated_at": now}
    s.execute(ins.values(**values).on_conflict_do_update(index_elements=["name"], set_=values))


def resume(sessions: sessionmaker[Session], name: str, now: datetime) -> None:
    with sessions.begin() as s:
        set_status(s, name, ProviderStatus.OK, None, None, now)


def all_states(s: Session) -> dict[str, ProviderState]:
    return {r.name: r for r in s.scalars(select(ProviderState))}
