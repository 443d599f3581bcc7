"""The one writer of an item's state: named compare-and-set functions over `pipeline.states.TRANSITIONS`.

Every function runs inside the caller's transaction (so a state change commits with the ledger row, the
budget settlement or the attempt that goes with it) and is one UPDATE whose WHERE clause names the source
states the table allows for its target, intersected with the function's own. The row count says whether it
happened: 0 means the item was not in a state (or lease) this move starts from, and nothing was written.

    insert_items new items                                   -> pending
    queue        pending                                     -> queued
    unqueue      queued                                      -> pending
    claim        queued, or pending and due (job active)     -> running under a lease
    claim_many   pending                                     -> running under one lease (a batch)
    retry_at     running under my lease                      -> pending, due at T
    give_back    running under my lease                      -> pending (its lease expired, or it failed oddly)
    finish       running under my lease                      -> succeeded | cached | failed | blocked | cancelled
    cancel       pending, queued                             -> cancelled
    reset        final, pending, queued                      -> pending with a fresh start

Besides the state, the lease-guarded bookkeeping of a running item lives here too (`renew`, `start_attempt`,
`hold`): each is a compare-and-set on the lease, like the moves. No other module updates or inserts items.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, or_, select, update
from sqlalchemy.orm import Session

from pipeline.db.models import Item, Job
from pipeline.money import ZERO
from pipeline.states import FINAL_STATES, TRANSITIONS, ItemState, JobState

#: the state every item starts in
INITIAL = ItemState.PENDING
#: rows per INSERT statement
INSERT_CHUNK = 2000

_RESETTABLE = frozenset({*FINAL_STATES, ItemState.PENDING, ItemState.QUEUED})


def allowed(source: ItemState, target: ItemState) -> bool:
    return target in TRANSITIONS[source]


def _move(s: Session, target: ItemState, frm: Collection[ItemState], now: datetime,
          *where: ColumnElement[bool], **values: Any) -> int:
    """UPDATE items SET state=target ... WHERE state IN (frm allowed into target by the table) AND where."""
    sources = sorted(f for f in frm if allowed(f, target))
    if not sources:
        return 0
    res = s.execute(update(Item).where(Item.state.in_(sources), *where)
                    .values(state=target, updated_at=now, **values)
                    .execution_options(synchronize_session=False))
    return int(res.rowcount)  # type: ignore[attr-defined]


def _mine(item_id: int, owner: str) -> ColumnElement[bool]:
    return and_(Item.id == item_id, Item.lease_owner == owner)


def owned(item_id: int, owner: str) -> ColumnElement[bool]:
    """WHERE clause for 'this item, still running under my lease'."""
    return and_(_mine(item_id, owner), Item.state == ItemState.RUNNING)


#: what leaving `running` clears: the lease, and the budget the item held (settled by then)
_LEAVE_RUNNING: Mapping[str, Any] = {"lease_owner": None, "lease_expires_at": None, "reserved_usd": ZERO,
                                     "reserved_periods": None}


def insert_items(s: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    """New items (column values without `state`), in the initial state."""
    for i in range(0, len(rows), INSERT_CHUNK):
        s.execute(insert(Item), [{**r, "state": INITIAL} for r in rows[i:i + INSERT_CHUNK]])
    return len(rows)


def queue(s: Session, ids: Sequence[int], now: datetime) -> int:
    """pending -> queued: the dispatcher is about to publish them."""
    return _move(s, ItemState.QUEUED, {ItemState.PENDING}, now, Item.id.in_(list(ids)), queued_at=now)


def unqueue(s: Session, now: datetime, *, ids: Sequence[int] | None = None, queued_at: datetime | None = None,
            queued_before: datetime | None = None, job_id: int | None = None) -> int:
    """queued -> pending: the publish failed (`ids`, `queued_at`), the message was lost (`queued_before`), or
    the job was paused while they waited (`job_id`)."""
    where: list[ColumnElement[bool]] = []
    if ids is not None:
        where.append(Item.id.in_(list(ids)))
    if queued_at is not None:
        where.append(Item.queued_at == queued_at)
    if queued_before is not None:
        where.append(Item.queued_at < queued_before)
    if job_id is not None:
        where.append(Item.job_id == job_id)
    return _move(s, ItemState.PENDING, {ItemState.QUEUED}, now, *where, queued_at=None)


_active_jobs = select(Job.id).where(Job.state == JobState.ACTIVE).scalar_subquery()


def claim(s: Session, item_id: int, owner: str, lease_until: datetime, now: datetime) -> bool:
    """queued, or pending and due -> running under `owner`'s lease, when its job is active. The claim, not the
    broker, decides who runs an item: a duplicate or late message finds it taken."""
    due = or_(Item.state == ItemState.QUEUED, Item.next_attempt_at <= now)
    return _move(s, ItemState.RUNNING, {ItemState.QUEUED, ItemState.PENDING}, now,
                 Item.id == item_id, due, Item.job_id.in_(_active_jobs),
                 lease_owner=owner, lease_expires_at=lease_until) == 1


def claim_many(s: Session, ids: Sequence[int], owner: str, lease_until: datetime, now: datetime) -> int:
    """pending -> running under one lease (the items of a provider batch)."""
    return _move(s, ItemState.RUNNING, {ItemState.PENDING}, now, Item.id.in_(list(ids)),
                 lease_owner=owner, lease_expires_at=lease_until)


def renew(s: Session, ids: Sequence[int], owner: str, lease_until: datetime) -> int:
    """Extend `owner`'s leases on these running items (no state change)."""
    res = s.execute(update(Item).where(Item.id.in_(list(ids)), Item.lease_owner == owner,
                                       Item.state == ItemState.RUNNING)
                    .values(lease_expires_at=lease_until).execution_options(synchronize_session=False))
    return int(res.rowcount)  # type: ignore[attr-defined]


def hold(s: Session, item_id: int, owner: str, amount: Decimal, periods: Sequence[str] = ()) -> bool:
    """Record the budget a running item reserved and the periods it was reserved in, so whoever gives it back
    settles exactly that (sweep.give_back); ZERO and no periods once it is settled."""
    res = s.execute(update(Item).where(owned(item_id, owner))
                    .values(reserved_usd=amount, reserved_periods=list(periods) or None)
                    .execution_options(synchronize_session=False))
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def start_attempt(s: Session, item_id: int, owner: str, provider: str) -> bool:
    """Count a provider call against the item (attempts + 1), under the lease like every other write."""
    res = s.execute(update(Item).where(owned(item_id, owner))
                    .values(attempts=Item.attempts + 1, provider=provider)
                    .execution_options(synchronize_session=False))
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def retry_at(s: Session, item_id: int, owner: str, at: datetime, now: datetime, *, reason: str | None = None,
             provider_index: int | None = None, refund_attempt: bool = False) -> bool:
    """running under my lease -> pending, due at `at`; `provider_index` moves it to another provider,
    `refund_attempt` un-counts the call (the provider, not the item, was at fault)."""
    values: dict[str, Any] = dict(_LEAVE_RUNNING, next_attempt_at=at)
    if reason is not None:
        values["failure_reason"] = reason
    if provider_index is not None:
        values["provider_index"] = provider_index
    if refund_attempt:
        values["attempts"] = Item.attempts - 1
    return _move(s, ItemState.PENDING, {ItemState.RUNNING}, now, _mine(item_id, owner), **values) == 1


def give_back(s: Session, item_id: int, owner: str, at: datetime, now: datetime) -> bool:
    """running under `owner`'s lease -> pending, due at `at`: the lease expired, or its worker hit an
    unexpected error. The caller settles the budget and the open attempts in the same transaction."""
    return _move(s, ItemState.PENDING, {ItemState.RUNNING}, now, _mine(item_id, owner),
                 **_LEAVE_RUNNING, next_attempt_at=at) == 1


def finish(s: Session, item_id: int, owner: str, state: ItemState, now: datetime, *, reason: str | None = None,
           stored_url: str | None = None, cost_usd: Decimal | None = None, thumb_key: str | None = None) -> bool:
    """running under my lease -> a final state. succeeded and cached carry where the image is and what it cost
    (and clear `force`: it has been honoured); failed, blocked and cancelled carry the reason."""
    if state not in FINAL_STATES:
        raise ValueError(f"finish needs a final state, not {state}")
    values: dict[str, Any] = dict(_LEAVE_RUNNING, finished_at=now, failure_reason=reason)
    if state in (ItemState.SUCCEEDED, ItemState.CACHED):
        values.update(stored_url=stored_url, cost_usd=cost_usd if cost_usd is not None else ZERO,
                      thumb_key=thumb_key, force=False)
    return _move(s, state, {ItemState.RUNNING}, now, _mine(item_id, owner), **values) == 1


def cancel(s: Session, job_id: int, now: datetime) -> int:
    """pending, queued -> cancelled: a cancelled job's items that have not started (running ones finish)."""
    return _move(s, ItemState.CANCELLED, {ItemState.PENDING, ItemState.QUEUED}, now, Item.job_id == job_id,
                 finished_at=now, failure_reason="cancelled")


def reset(s: Session, now: datetime, *, job_id: int | None = None, ids: Sequence[int] | None = None,
          keys: Sequence[str] | None = None, states: Collection[ItemState] = FINAL_STATES, force: bool = False,
          spec: Mapping[str, Any] | None = None) -> int:
    """Items in `states` (final ones, or pending and queued ones whose spec changed) -> pending with a fresh
    start: no attempts, the first provider, due now. `spec` replaces the request's columns (a changed item on
    resubmission). A running item is never reset: its call finishes first."""
    where: list[ColumnElement[bool]] = []
    if job_id is not None:
        where.append(Item.job_id == job_id)
    if ids is not None:
        where.append(Item.id.in_(list(ids)))
    if keys is not None:
        where.append(Item.key.in_(list(keys)))
    values: dict[str, Any] = {
        "attempts": 0, "next_attempt_at": now, "failure_reason": None, "lease_owner": None,
        "lease_expires_at": None, "queued_at": None, "finished_at": None, "provider_index": 0, "force": force,
        **(spec or {}),
    }
    return _move(s, ItemState.PENDING, _RESETTABLE & set(states), now, *where, **values)
