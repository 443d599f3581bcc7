"""The circuit: repeated faults open it (shared through the attempts table), it cools down, one half-open
probe is let through, a clean answer closes it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from pipeline.clock import utcnow
from pipeline.core.process import Outcome, process_item
from pipeline.core.providers_state import COOLDOWN_S, FAILURE_THRESHOLD, availability
from pipeline.core.submit import submit
from pipeline.db.models import Item, ProviderState
from pipeline.sandbox.server import SandboxServer
from tests.core.helpers import job, runtime, settings_for, specs


def test_circuit_opens_cools_down_and_closes(tmp_path: Path, db_url: str, sandbox: SandboxServer) -> None:
    rt = runtime(settings_for(tmp_path, db_url, sandbox.url, worker={"max_attempts": 10}))
    try:
        bad = submit(rt.sessions, job("bad"), specs(FAILURE_THRESHOLD, prompt="down {i} [sandbox:503]"), utcnow())
        with rt.sessions() as s:
            ids = list(s.scalars(select(Item.id).where(Item.job_id == bad.job_id).order_by(Item.id)))
        for i in ids:
            assert process_item(rt.ctx, i) == Outcome.RETRY
        with rt.sessions() as s:
            row = s.get(ProviderState, "sandbox")
            assert row is not None and row.status == "open"
            assert row.until is not None and row.until > utcnow() + timedelta(seconds=COOLDOWN_S - 5)
        # while open, a new item is not sent to the provider: it waits for the cool-down
        good = submit(rt.sessions, job("good"), specs(2, prompt="fine {i}"), utcnow())
        with rt.sessions() as s:
            good_ids = list(s.scalars(select(Item.id).where(Item.job_id == good.job_id).order_by(Item.id)))
        requests_before = sandbox.ledger()["requests"]
        assert process_item(rt.ctx, good_ids[0]) == Outcome.RETRY
        assert sandbox.ledger()["requests"] == requests_before
        # cool-down over: exactly one half-open probe is admitted; its clean answer closes the circuit
        with rt.sessions.begin() as s:
            s.execute(update(ProviderState).values(until=utcnow() - timedelta(seconds=1)))
            s.execute(update(Item).where(Item.job_id == good.job_id).values(next_attempt_at=utcnow()))
        with rt.sessions.begin() as s:
            first = availability(s, "sandbox", utcnow())
        with rt.sessions.begin() as s:
            second = availability(s, "sandbox", utcnow())
        assert first.ok and not second.ok
        with rt.sessions.begin() as s:
            s.execute(update(ProviderState).values(until=utcnow() - timedelta(seconds=1)))
        assert process_item(rt.ctx, good_ids[0]) == Outcome.SUCCEEDED
        with rt.sessions() as s:
            row = s.get(ProviderState, "sandbox")
            assert row is not None and row.status == "ok"
    finally:
        rt.close()
