"""Claiming items and keeping their leases: every state change is a compare-and-set on state and lease.

A lease is renewed only while a thread of this process works on the item (`holding`): an item whose thread
gave up (the database went away under it, say) stops being renewed, and the sweeper frees it when its lease
runs out, however long the process itself lives.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
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


#: items a thread of this process is working on, per lease owner (a count: one id may be delivered twice)
_held: dict[str, Counter[int]] = {}
_held_lock = threading.Lock()


@contextmanager
def holding(owner: str, item_id: int) -> Iterator[None]:
    """Mark `item_id` as worked on by this thread (around claim and processing) so its lease is renewed."""
    with _held_lock:
        _held.setdefault(owner, Counter())[item_id] += 1
    try:
        yield
    finally:
        with _held_lock:
            held = _held[owner]
            held[item_id] -= 1
            if held[item_id] <= 0:
                del held[item_id]
            if not held:
                del _held[owner]


def held_items(owner: str) -> list[int]:
    with _held_lock:
        return sorted(_held.get(owner, ()))


def renew_all(sessions: sessionmaker[Session], owner: str, lease_s: float, now: datetime) -> int:
    """Extend the leases of `owner` on the items its threads are working on (one statement per process)."""
    ids = held_items(owner)
    if not ids:
        return 0
    with sessions.begin() as s:
        res = s.execute(
            update(Item)
            .where(Item.id.in_(ids), Item.lease_owner == owner, Item.state == ItemState.RUNNING)
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
