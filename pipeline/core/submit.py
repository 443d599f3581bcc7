"""Submitting a manifest: one transaction creates or updates the job and its items (all or nothing).

The same job name again is the same logical job: items already done and unchanged stay as they are, changed
items are reset, new items are added. Nothing already paid for is paid again (the cache answers it). A changed
item whose call is running keeps it (the lifecycle never resets a running item): it is counted as `busy`, and
submitting again once it has finished generates the new spec.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.core import lifecycle
from pipeline.core.output_keys import refuse_shared_keys
from pipeline.db.models import CacheEntry, Item, Job
from pipeline.states import FINAL_STATES, CacheState, ItemState, JobState

#: ids per statement when resetting items or looking up cache keys
CHUNK = 2000
#: what a changed item may be reset from: anything but running (its call finishes first)
_CHANGEABLE = frozenset({*FINAL_STATES, ItemState.PENDING, ItemState.QUEUED})


class SpecLike(Protocol):
    """What submit reads of an expanded item (pipeline.manifest.ItemSpec)."""

    @property
    def key(self) -> str: ...
    @property
    def prompt(self) -> str: ...
    @property
    def resolution(self) -> str: ...
    @property
    def aspect_ratio(self) -> str: ...
    @property
    def output_format(self) -> str: ...
    @property
    def output_key(self) -> str: ...
    @property
    def cache_key(self) -> str: ...
    @property
    def spec_hash(self) -> str: ...
    @property
    def references(self) -> Sequence[Any]: ...
    @property
    def tags(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class JobSpec:
    name: str
    providers: list[str]
    mode: str = "sync"
    #: items go through the provider batch tier (decided at submit from mode and deadline)
    batch: bool = False
    manifest: dict[str, Any] | None = None
    manifest_path: str | None = None
    region: str | None = None
    max_usd: Decimal | None = None
    max_price_usd: Decimal | None = None
    deadline_at: datetime | None = None
    #: refuse output keys that an item of another job also has (manifests: unless `output: {shared: true}`)
    exclusive_keys: bool = False


@dataclass(frozen=True)
class SubmitResult:
    job_id: int
    name: str
    new: int
    changed: int
    unchanged: int
    #: items (new, changed or unchanged) that will cost nothing: done already or answered by the cache
    cached: int
    #: changed items left as they were because their call is running: submit again once they finish
    busy: int = 0

    def summary(self) -> str:
        line = f"{self.cached} cached, {self.new} new, {self.changed} changed"
        return line + (f" ({self.busy} of them running: submit again once they finish)" if self.busy else "")


def _item_row(job_id: int, spec: SpecLike, now: datetime) -> dict[str, Any]:
    return {
        "job_id": job_id, "key": spec.key, "prompt": spec.prompt,
        "resolution": spec.resolution, "aspect_ratio": spec.aspect_ratio, "output_format": spec.output_format,
        "output_key": spec.output_key,
        "references": [{"source": r.source, "sha256": r.sha256, "mime_type": r.mime_type} for r in spec.references],
        "tags": list(spec.tags), "cache_key": spec.cache_key, "spec_hash": spec.spec_hash, "force": False,
        "attempts": 0, "next_attempt_at": now, "provider_index": 0, "cost_usd": Decimal(0),
        "reserved_usd": Decimal(0), "created_at": now, "updated_at": now,
    }


def submit(sessions: sessionmaker[Session], job: JobSpec, specs: Sequence[SpecLike], now: datetime, *,
           in_transaction: Callable[[Session, int], None] | None = None) -> SubmitResult:
    """`in_transaction(session, job_id)` runs inside the submit's transaction once the job row exists, so what it
    writes (a schedule's fire row) commits together with the job or not at all."""
    with sessions.begin() as s:
        row = s.scalar(select(Job).where(Job.name == job.name).with_for_update())
        fields = {
            "mode": job.mode, "batch": job.batch, "providers": list(job.providers), "manifest": job.manifest or {},
            "manifest_path": job.manifest_path, "region": job.region, "max_usd": job.max_usd,
            "max_price_usd": job.max_price_usd, "deadline_at": job.deadline_at, "updated_at": now,
        }
        if row is None:
            row = Job(name=job.name, state=JobState.ACTIVE, spent_usd=Decimal(0), reserved_usd=Decimal(0),
                      created_at=now, **fields)
            s.add(row)
            s.flush()
            existing: dict[str, tuple[int, str, str]] = {}
        else:
            for k, v in fields.items():
                setattr(row, k, v)
            row.state = JobState.ACTIVE
            existing = {k: (i, h, st) for i, k, h, st in
                        s.execute(select(Item.id, Item.key, Item.spec_hash, Item.state).where(Item.job_id == row.id))}
        job_id = row.id
        if job.exclusive_keys:
            refuse_shared_keys(s, job_id, specs)
        if in_transaction is not None:
            in_transaction(s, job_id)
        ready = _ready_keys(s, [sp.cache_key for sp in specs])
        new_rows: list[dict[str, Any]] = []
        reset_ids: list[int] = []
        new = changed = unchanged = cached = busy = 0
        for spec in specs:
            prior = existing.get(spec.key)
            if prior is None:
                new_rows.append(_item_row(job_id, spec, now))
                new += 1
                cached += spec.cache_key in ready
                continue
            item_id, spec_hash, state = prior
            if spec_hash == spec.spec_hash:
                # unchanged: a final item runs again, and is answered by the cache when its image exists
                # (which also puts back an output someone deleted); an item in flight is left alone
                unchanged += 1
                if state in FINAL_STATES:
                    reset_ids.append(item_id)
                    cached += spec.cache_key in ready
                continue
            changed += 1
            cached += spec.cache_key in ready
            values = _item_row(job_id, spec, now)
            for k in ("job_id", "key", "created_at", "updated_at", "next_attempt_at", "attempts", "provider_index",
                      "force"):
                values.pop(k)
            values.update(provider=None, stored_url=None)
            if not lifecycle.reset(s, now, ids=[item_id], states=_CHANGEABLE, spec=values):
                busy += 1
        lifecycle.insert_items(s, new_rows)
        for i in range(0, len(reset_ids), CHUNK):
            lifecycle.reset(s, now, ids=reset_ids[i:i + CHUNK], states=FINAL_STATES)
        return SubmitResult(job_id, job.name, new, changed, unchanged, cached, busy)


def _ready_keys(s: Session, keys: list[str]) -> set[str]:
    out: set[str] = set()
    for i in range(0, len(keys), CHUNK):
        out.update(s.scalars(select(CacheEntry.cache_key).where(CacheEntry.cache_key.in_(keys[i:i + CHUNK]),
                                                                CacheEntry.state == CacheState.READY)))
    return out
