"""Writing report fixtures straight into the tables (bulk inserts), for exact and large-scale report tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.migrate import migrate
from pipeline.db.models import Attempt, Item, Job, LedgerEntry
from pipeline.db.session import make_engine, make_sessionmaker

CHUNK = 10_000


@contextmanager
def migrated(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    try:
        migrate(engine)
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def add_job(sessions: sessionmaker[Session], name: str, now: datetime, providers: Sequence[str] = ("sandbox",)) -> int:
    with sessions.begin() as s:
        job = Job(name=name, state="active", mode="sync", providers=list(providers), manifest={}, spent_usd=0,
                  reserved_usd=0, created_at=now, updated_at=now)
        s.add(job)
        s.flush()
        return job.id


def add_items(sessions: sessionmaker[Session], job_id: int, n: int, now: datetime,
              row: Callable[[int], dict[str, Any]] = lambda i: {}) -> list[int]:
    """n items (key it-000001...), each overridable by `row(i)` (Core executemany: every row has the same keys);
    returns their ids in order."""
    base = {"job_id": job_id, "state": "succeeded", "resolution": "1K", "aspect_ratio": "1:1",
            "output_format": "png", "references": [], "tags": [], "spec_hash": "0" * 64, "force": False,
            "attempts": 1, "next_attempt_at": now, "provider_index": 0, "provider": "sandbox",
            "cost_usd": Decimal("0.134"), "reserved_usd": Decimal(0), "created_at": now, "updated_at": now,
            "finished_at": now, "thumb_key": None, "failure_reason": None, "stored_url": None}
    with sessions.begin() as s:
        for start in range(0, n, CHUNK):
            batch = []
            for i in range(start, min(n, start + CHUNK)):
                key = f"it-{i:06d}"
                batch.append({**base, "key": key, "prompt": f"prompt {i}", "output_key": f"t/{key}.png",
                              "cache_key": f"{i:064x}", **row(i)})
            s.connection().execute(insert(Item.__table__), batch)
    with sessions() as s:
        return list(s.scalars(select(Item.id).where(Item.job_id == job_id).order_by(Item.id)))


def bulk(sessions: sessionmaker[Session], model: Any, rows: list[dict[str, Any]]) -> None:
    with sessions.begin() as s:
        for start in range(0, len(rows), CHUNK):
            s.connection().execute(insert(model.__table__), rows[start:start + CHUNK])


def ledger_row(job_id: int, item_id: int, now: datetime, *, provider: str = "sandbox", kind: str = "image",
               cost: str = "0.134", list_cost: str = "0.134", resolution: str = "1K") -> dict[str, Any]:
    return {"job_id": job_id, "item_id": item_id, "provider": provider, "kind": kind, "resolution": resolution,
            "cost_usd": Decimal(cost), "list_cost_usd": Decimal(list_cost), "cost_source": "price_table",
            "batch": False, "day": now.date(), "created_at": now}


def attempt_row(job_id: int, item_id: int, started: datetime, *, provider: str = "sandbox",
                outcome: str = "succeeded", latency_ms: int | None = 100, http_status: int | None = 200,
                error_class: str | None = None) -> dict[str, Any]:
    return {"job_id": job_id, "item_id": item_id, "provider": provider, "outcome": outcome,
            "http_status": http_status, "error_class": error_class, "latency_ms": latency_ms,
            "maybe_billed": False, "started_at": started, "finished_at": None if outcome == "started" else started}


__all__ = ["Attempt", "LedgerEntry", "add_items", "add_job", "attempt_row", "bulk", "ledger_row", "migrated"]
