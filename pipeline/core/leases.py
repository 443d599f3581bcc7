"""Claiming items and keeping their leases: every state change is a compare-and-set on state and lease."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from pipeline.clock import Clock
from pipeline.db.models import Item, Job
from pipeline.states import ItemState, JobState

_active_jobs = select(Job.id).where(Job.state == JobState.ACTIVE).scalar_subquery()


def claim(sessions: sessionmaker[Session], item_id: int, owner: str, lease_s: float, now: datetime) -> Item | None:
    """Take an item that is queued (or pending and due) for `owner` under a lease. None if someone else has
    it, it is not due, it is final, or its job is not active: the claim, not the broker, decides who runs it."""
    with sessions.begin() as s:
        res = s.execute(
            update(Item)
            .where(
                Item.id == item_id,
                or_(Item.state == ItemState.QUEUED,
                    and_(Item.state == ItemState.PENDING, Item.next_attempt_at <= now)),
                Item.job_id.in_(_active_jobs),
            )
            .values(state=ItemState.RUNNING, lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return s.get(Item, item_id)


def renew_all(sessions: sessionmaker[Session], owner: str, lease_s: float, now: datetime) -> int:
    """Extend every lease `owner` holds (one statement per process, not one thread per item)."""
    with sessions.begin() as s:
        res = s.execute(
            update(Item)
            .where(Item.lease_owner == owner, Item.state == ItemState.RUNNING)
            .values(lease_expires_at=now + timedelta(seconds=lease_s))
            .execution_options(synchronize_session=False)
        )
        return int(res.rowcount)  # type: ignore[attr-defined]


def owned(item_id: int, owner: str) -> ColumnElement[bool]:
    """WHERE clause for 'this item, still running under my lease'."""
    return and_(Item.id == item_id, Item.state == ItemState.RUNNING, Item.lease_owner == owner)


class LeaseRenewer:
    """A daemon thread renewing this process's leases every lease_s / 3 while items run."""

    def __init__(self, sessions: sessionmaker[Session], owner: str, lease_s: float, clock: Clock) -> None:
        self._sessions = sessions
        self._owner = owner
        self._lease_s = lease_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._lease_s / 3):
            try:
                renew_all(self._sessions, self._owner, self._lease_s, self._clock())
            except Exception:
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
