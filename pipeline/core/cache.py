"""The prompt-hash cache, which is also the idempotency key.

An entry is taken (state pending, owner = item) before the provider call, so two identical items, or one item
delivered twice, pay once: the others wait for the owner and are then answered from the stored object.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline.db.models import CacheEntry, Item
from pipeline.states import ACTIVE_STATES, CacheState


class Decision(StrEnum):
    HIT = "hit"  # a stored object answers this request
    OWNER = "owner"  # this item makes the call
    WAIT = "wait"  # another live item is making it: come back later


@dataclass(frozen=True)
class CacheDecision:
    decision: Decision
    object_key: str | None = None
    content_type: str | None = None
    list_cost_usd: Decimal | None = None


def cache_object_key(cache_key: str, output_format: str) -> str:
    """Content-addressed home of a generated image; item outputs are copies (or links) of it."""
    ext = {"jpeg": "jpg"}.get(output_format, output_format)
    return f"_cache/{cache_key[:2]}/{cache_key}.{ext}"


def reserve(s: Session, cache_key: str, item_id: int, now: datetime, *, force: bool) -> CacheDecision:
    """Decide, inside the caller's transaction, whether this item is a hit, the owner, or must wait."""
    for _ in range(3):
        entry = s.get(CacheEntry, cache_key, with_for_update=s.bind is not None and s.bind.dialect.name != "sqlite")
        if entry is None:
            try:
                with s.begin_nested():
                    s.add(CacheEntry(cache_key=cache_key, state=CacheState.PENDING, owner_item_id=item_id,
                                     created_at=now, updated_at=now))
                return CacheDecision(Decision.OWNER)
            except IntegrityError:
                continue  # someone took it between our read and insert: read again
        if entry.state == CacheState.READY and not force:
            return CacheDecision(Decision.HIT, entry.object_key, entry.content_type, entry.list_cost_usd)
        if entry.owner_item_id == item_id and entry.state == CacheState.PENDING:
            return CacheDecision(Decision.OWNER)
        if entry.state == CacheState.PENDING:
            owner_state = s.scalar(select(Item.state).where(Item.id == entry.owner_item_id))
            if owner_state in ACTIVE_STATES:
                return CacheDecision(Decision.WAIT)
        # the owner is gone or final without an image, or a forced regeneration: take it over (CAS)
        res = s.execute(
            update(CacheEntry)
            .where(CacheEntry.cache_key == cache_key, CacheEntry.owner_item_id == entry.owner_item_id,
                   CacheEntry.state == entry.state)
            .values(state=CacheState.PENDING, owner_item_id=item_id, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount == 1:  # type: ignore[attr-defined]
            s.expire(entry)
            return CacheDecision(Decision.OWNER)
    return CacheDecision(Decision.WAIT)


def complete(s: Session, cache_key: str, item_id: int, *, object_key: str, content_type: str, provider: str,
             resolution: str, cost_usd: Decimal, list_cost_usd: Decimal, now: datetime) -> None:
    """Mark the entry ready (whoever owns it now: the image exists and is paid for either way)."""
    s.execute(
        update(CacheEntry)
        .where(CacheEntry.cache_key == cache_key)
        .values(state=CacheState.READY, owner_item_id=item_id, object_key=object_key, content_type=content_type,
                provider=provider, resolution=resolution, cost_usd=cost_usd, list_cost_usd=list_cost_usd,
                updated_at=now)
        .execution_options(synchronize_session=False)
    )


def abandon(s: Session, cache_key: str, item_id: int) -> None:
    """Drop this item's pending reservation (terminal failure, budget block) so another item may try."""
    s.execute(
        delete(CacheEntry)
        .where(CacheEntry.cache_key == cache_key, CacheEntry.owner_item_id == item_id,
               CacheEntry.state == CacheState.PENDING)
        .execution_options(synchronize_session=False)
    )
