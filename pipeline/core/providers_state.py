"""Provider-level state shared by every worker: paused (auth, no credit), parked (daily quota) until T, or a
circuit open after repeated faults.

The circuit: `failure_threshold` consecutive faulty calls (5xx, timeouts, bad images; not 429s, which the
gate handles, nor blocks, which are the prompt's fault) open it for `cooldown_s`. When the cool-down ends one
caller takes the half-open probe (a compare-and-set moves `until` on by another cool-down); a clean answer
closes the circuit, another fault opens it again. The counts come from the attempts table, which every
worker writes, so the circuit is shared without another store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.models import Attempt, ProviderState
from pipeline.db.session import upsert_insert
from pipeline.states import AttemptOutcome, ProviderStatus


@dataclass(frozen=True)
class Availability:
    ok: bool
    status: str = ProviderStatus.OK
    reason: str | None = None
    until: datetime | None = None


#: consecutive faulty calls that open a provider's circuit
FAILURE_THRESHOLD = 5
#: how long an open circuit refuses calls before a half-open probe
COOLDOWN_S = 30.0
#: error classes that count against the circuit (the provider's fault, not the prompt's or the rate's)
FAULT_CLASSES = ("unavailable", "timeout", "bad_image", "malformed", "provider_error", "retryable")


def availability(s: Session, name: str, now: datetime) -> Availability:
    row = s.get(ProviderState, name)
    if row is None or row.status == ProviderStatus.OK:
        return Availability(True)
    if row.status == ProviderStatus.PARKED and row.until is not None and row.until <= now:
        return Availability(True)
    if row.status == ProviderStatus.OPEN and row.until is not None and row.until <= now:
        # half-open: exactly one caller wins the probe by moving `until` on
        res = s.execute(update(ProviderState)
                        .where(ProviderState.name == name, ProviderState.status == ProviderStatus.OPEN,
                               ProviderState.until == row.until)
                        .values(until=now + timedelta(seconds=COOLDOWN_S), updated_at=now)
                        .execution_options(synchronize_session=False))
        if res.rowcount == 1:  # type: ignore[attr-defined]
            return Availability(True, ProviderStatus.OPEN, "half-open probe", row.until)
        s.expire(row)
        row = s.get(ProviderState, name)
        assert row is not None
    return Availability(False, row.status, row.reason, row.until)


def consecutive_faults(s: Session, name: str, limit: int = FAILURE_THRESHOLD) -> int:
    """Faulty calls of `name` since its last clean answer (looking back `limit` settled attempts)."""
    recent = s.execute(select(Attempt.outcome, Attempt.error_class)
                       .where(Attempt.provider == name, Attempt.outcome != AttemptOutcome.STARTED)
                       .order_by(Attempt.id.desc()).limit(limit)).all()
    n = 0
    for outcome, error_class in recent:
        if outcome == AttemptOutcome.SUCCEEDED:
            break
        if outcome in (AttemptOutcome.RETRYABLE, AttemptOutcome.ABANDONED) and (error_class or "") in FAULT_CLASSES:
            n += 1
    return n


def record_fault(s: Session, name: str, now: datetime) -> bool:
    """After a faulty call: open the circuit when the run of faults reaches the threshold. True if opened."""
    if consecutive_faults(s, name) < FAILURE_THRESHOLD:
        return False
    row = s.get(ProviderState, name)
    if row is not None and row.status in (ProviderStatus.PAUSED, ProviderStatus.PARKED):
        return False
    set_status(s, name, ProviderStatus.OPEN, f"circuit open after {FAILURE_THRESHOLD} faults in a row",
               now + timedelta(seconds=COOLDOWN_S), now)
    return True


def record_success(s: Session, name: str, now: datetime) -> None:
    """A clean answer closes an open circuit (the half-open probe succeeded)."""
    s.execute(update(ProviderState).where(ProviderState.name == name, ProviderState.status == ProviderStatus.OPEN)
              .values(status=ProviderStatus.OK, reason=None, until=None, updated_at=now)
              .execution_options(synchronize_session=False))


def set_status(s: Session, name: str, status: str, reason: str | None, until: datetime | None,
               now: datetime) -> None:
    ins = upsert_insert(s, ProviderState)
    values = {"name": name, "status": status, "reason": reason, "until": until, "updated_at": now}
    s.execute(ins.values(**values).on_conflict_do_update(index_elements=["name"], set_=values))


def resume(sessions: sessionmaker[Session], name: str, now: datetime) -> None:
    with sessions.begin() as s:
        set_status(s, name, ProviderStatus.OK, None, None, now)


def all_states(s: Session) -> dict[str, ProviderState]:
    return {r.name: r for r in s.scalars(select(ProviderState))}
