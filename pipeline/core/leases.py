"""Claiming items and keeping their leases (the compare-and-sets themselves are pipeline.core.lifecycle's).

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

from sqlalchemy.orm import Session, sessionmaker

from pipeline.clock import Clock
from pipeline.core import lifecycle
from pipeline.db.models import Item


def claim(sessions: sessionmaker[Session], item_id: int, owner: str, lease_s: float, now: datetime) -> Item | None:
    """Take an item that is queued (or pending and due) for `owner` under a lease. None if someone else has
    it, it is not due, it is final, or its job is not active: the claim, not the broker, decides who runs it."""
    with sessions.begin() as s:
        if not lifecycle.claim(s, item_id, owner, now + timedelta(seconds=lease_s), now):
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
        return lifecycle.renew(s, ids, owner, now + timedelta(seconds=lease_s))


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
