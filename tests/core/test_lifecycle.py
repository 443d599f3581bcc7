"""The item lifecycle: the transition table is the one authority, lifecycle.py its one writer.

Every writer is tried from every state on SQLite and Postgres: a move the table does not allow is refused
(row count 0, the row unchanged); an allowed one happens exactly when the writer starts from that state."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from pipeline.clock import utcnow
from pipeline.core import lifecycle
from pipeline.core.submit import submit
from pipeline.db.migrate import upgrade
from pipeline.db.models import Item, Job
from pipeline.db.session import make_engine, make_sessionmaker
from pipeline.states import FINAL_STATES, TRANSITIONS, ItemState, JobState, sources
from tests.core.helpers import job, specs

ROOT = Path(__file__).resolve().parents[2]
ME = "me"
ALL = tuple(ItemState)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    upgrade(engine)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Writer:
    name: str
    target: ItemState
    #: the states this writer starts from (its own rule, within the table)
    starts_from: frozenset[ItemState]
    call: Callable[[Session, int, int, datetime], int | bool]


_LEASE = timedelta(seconds=30)
WRITERS = [
    Writer("queue", ItemState.QUEUED, frozenset({ItemState.PENDING}),
           lambda s, i, j, now: lifecycle.queue(s, [i], now)),
    Writer("unqueue", ItemState.PENDING, frozenset({ItemState.QUEUED}),
           lambda s, i, j, now: lifecycle.unqueue(s, now, ids=[i])),
    Writer("claim", ItemState.RUNNING, frozenset({ItemState.PENDING, ItemState.QUEUED}),
           lambda s, i, j, now: lifecycle.claim(s, i, ME, now + _LEASE, now)),
    Writer("claim_many", ItemState.RUNNING, frozenset({ItemState.PENDING}),
           lambda s, i, j, now: lifecycle.claim_many(s, [i], ME, now + _LEASE, now)),
    Writer("retry_at", ItemState.PENDING, frozenset({ItemState.RUNNING}),
           lambda s, i, j, now: lifecycle.retry_at(s, i, ME, now, now, reason="retry")),
    Writer("give_back", ItemState.PENDING, frozenset({ItemState.RUNNING}),
           lambda s, i, j, now: lifecycle.give_back(s, i, ME, now, now)),
    *[Writer(f"finish:{st}", st, frozenset({ItemState.RUNNING}),
             lambda s, i, j, now, st=st: lifecycle.finish(s, i, ME, st, now, reason="done"))
      for st in sorted(FINAL_STATES)],
    Writer("cancel", ItemState.CANCELLED, frozenset({ItemState.PENDING, ItemState.QUEUED}),
           lambda s, i, j, now: lifecycle.cancel(s, j, now)),
    # asked to reset from every state: the table (and reset's own rule) must keep a running item as it is
    Writer("reset", ItemState.PENDING, frozenset({*FINAL_STATES, ItemState.PENDING, ItemState.QUEUED}),
           lambda s, i, j, now: lifecycle.reset(s, now, ids=[i], states=ALL)),
]


def _item_in(sessions: sessionmaker[Session], state: ItemState, now: datetime, name: str = "") -> tuple[int, int]:
    """One item, alone in its job, put in `state` under my lease (queued, due)."""
    res = submit(sessions, job(f"lc-{state}-{name}"), specs(1), now - timedelta(seconds=5))
    with sessions.begin() as s:
        item_id = s.scalar(select(Item.id).where(Item.job_id == res.job_id))
        assert item_id is not None
        s.execute(update(Item).where(Item.id == item_id).values(
            state=state, lease_owner=ME, lease_expires_at=now + _LEASE, queued_at=now - timedelta(seconds=1),
            next_attempt_at=now - timedelta(seconds=1)))
    return item_id, res.job_id


def test_the_table_has_no_dead_rows() -> None:
    """Every move the table allows is made by some writer, and every writer stays inside the table."""
    made = {(src, w.target) for w in WRITERS for src in w.starts_from}
    listed = {(src, dst) for src, dsts in TRANSITIONS.items() for dst in dsts}
    assert made == listed
    assert set(TRANSITIONS) == set(ItemState)
    assert sources(ItemState.RUNNING) == {ItemState.PENDING, ItemState.QUEUED}


def test_every_disallowed_transition_is_refused(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    refused = performed = 0
    for state in ALL:
        for w in WRITERS:
            item_id, job_id = _item_in(sessions, state, now, w.name)
            with sessions.begin() as s:
                n = int(w.call(s, item_id, job_id, now))
            with sessions() as s:
                after = s.scalar(select(Item.state).where(Item.id == item_id))
            where = f"{w.name} from {state}"
            if w.target not in TRANSITIONS[state]:
                assert n == 0 and after == state, f"{where}: the table forbids it, yet it happened"
                refused += 1
            elif state in w.starts_from:
                assert n == 1 and after == w.target, f"{where}: allowed and not done"
                performed += 1
            else:
                assert n == 0 and after == state, f"{where}: not this writer's move"
    disallowed = {(src, w.target) for src in ALL for w in WRITERS if w.target not in TRANSITIONS[src]}
    assert refused >= len(disallowed) and performed == sum(len(w.starts_from) for w in WRITERS)


def test_moves_of_a_running_item_need_its_lease(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    item_id, _ = _item_in(sessions, ItemState.RUNNING, now)
    with sessions.begin() as s:
        assert not lifecycle.retry_at(s, item_id, "someone-else", now, now)
        assert not lifecycle.give_back(s, item_id, "someone-else", now, now)
        assert not lifecycle.finish(s, item_id, "someone-else", ItemState.SUCCEEDED, now)
        # counting an attempt is a compare-and-set on the lease too (it was by id only)
        assert not lifecycle.start_attempt(s, item_id, "someone-else", "sandbox")
        assert not lifecycle.hold(s, item_id, "someone-else", Decimal("0.1"), ["day:2026-11-27"])
        assert lifecycle.start_attempt(s, item_id, ME, "sandbox")
        assert lifecycle.hold(s, item_id, ME, Decimal("0.1"), ["day:2026-11-27"])
    with sessions() as s:
        item = s.get(Item, item_id)
        assert item is not None and item.state == ItemState.RUNNING and item.attempts == 1
        assert item.reserved_usd == Decimal("0.1") and item.reserved_periods == ["day:2026-11-27"]
    with sessions.begin() as s, pytest.raises(ValueError):
        lifecycle.finish(s, item_id, ME, ItemState.PENDING, now)


def test_claim_needs_a_due_item_of_an_active_job(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    item_id, job_id = _item_in(sessions, ItemState.PENDING, now)
    with sessions.begin() as s:
        s.execute(update(Item).where(Item.id == item_id).values(next_attempt_at=now + timedelta(seconds=60)))
        assert not lifecycle.claim(s, item_id, ME, now + _LEASE, now)  # not due
        s.execute(update(Item).where(Item.id == item_id).values(next_attempt_at=now))
        s.execute(update(Job).where(Job.id == job_id).values(state=JobState.PAUSED))
        assert not lifecycle.claim(s, item_id, ME, now + _LEASE, now)  # job paused
        s.execute(update(Job).where(Job.id == job_id).values(state=JobState.ACTIVE))
        assert lifecycle.claim(s, item_id, ME, now + _LEASE, now)
        assert not lifecycle.claim(s, item_id, "second", now + _LEASE, now)  # taken


def test_resubmitting_a_changed_running_item_leaves_its_call_alone(sessions: sessionmaker[Session]) -> None:
    """A changed spec used to reset the item by id even while it ran (its lease and reservation wiped);
    now the running item keeps its call and is reported busy, and the next submission changes it."""
    now = utcnow()
    first = submit(sessions, job("busy"), specs(2), now)
    with sessions.begin() as s:
        ids = list(s.scalars(select(Item.id).where(Item.job_id == first.job_id).order_by(Item.id)))
        assert lifecycle.claim(s, ids[0], ME, now + _LEASE, now)
        assert lifecycle.hold(s, ids[0], ME, Decimal("0.134"))
    changed = specs(2, prompt="a blue plum {i}")
    again = submit(sessions, job("busy"), changed, now)
    assert (again.changed, again.busy) == (2, 1)
    assert "1 of them running" in again.summary()
    with sessions() as s:
        running = s.get(Item, ids[0])
        other = s.get(Item, ids[1])
        assert running is not None and other is not None
        assert running.state == ItemState.RUNNING and running.lease_owner == ME
        assert running.reserved_usd == Decimal("0.134") and running.prompt == "a red apple 0"
        assert other.state == ItemState.PENDING and other.prompt == "a blue plum 1"
    with sessions.begin() as s:
        assert lifecycle.finish(s, ids[0], ME, ItemState.SUCCEEDED, now, stored_url="x", cost_usd=Decimal("0.134"))
    third = submit(sessions, job("busy"), changed, now)
    assert (third.changed, third.busy) == (1, 0)
    with sessions() as s:
        item = s.get(Item, ids[0])
        assert item is not None and item.state == ItemState.PENDING and item.prompt == "a blue plum 0"


def _item_writes(path: Path) -> Iterator[str]:
    """`update(Item)` / `insert(Item)` statements and `<item>.state = ...` assignments in one module."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("update", "insert")
                and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "Item"):
            yield f"{path.relative_to(ROOT)}:{node.lineno} {node.func.id}(Item)"
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if (isinstance(t, ast.Attribute) and t.attr == "state" and isinstance(t.value, ast.Name)
                        and "item" in t.value.id.lower()):
                    yield f"{path.relative_to(ROOT)}:{node.lineno} {t.value.id}.state ="


def test_lifecycle_is_the_only_writer_of_items() -> None:
    writes = [w for p in sorted((ROOT / "pipeline").rglob("*.py")) if p.name != "lifecycle.py"
              for w in _item_writes(p)]
    assert writes == []
    assert list(_item_writes(ROOT / "pipeline" / "core" / "lifecycle.py"))  # the scan does see them
