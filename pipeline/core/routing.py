"""Which provider takes an item: the job's preference order from where failover left the item, skipping the
providers that cannot take it now (disabled, paused, parked, circuit open, too expensive, not official)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from pipeline.core.context import Context
from pipeline.core.providers_state import availability
from pipeline.core.tiers import flex_order
from pipeline.db.models import Item, Job
from pipeline.errors import PipelineError
from pipeline.states import ProviderStatus


@dataclass(frozen=True)
class Choice:
    name: str | None
    index: int = 0
    wait_until: datetime | None = None
    reason: str = ""


def choose_provider(ctx: Context, s: Session, job: Job, item: Item, now: datetime) -> Choice:
    """The first provider in the job's order, from the item's current position, that may take the call:
    enabled, not paused or parked, within the job's max price and data policy. With failover off, only
    the first. When none can, say until when to wait (parked) or why it cannot run at all (paused)."""
    names = list(job.providers)
    manifest = job.manifest or {}
    failover = manifest.get("failover", True)
    policy = manifest.get("data_policy", "any")
    # with failover, start from where the item's last retryable error moved it, and wrap around
    start = item.provider_index % len(names) if failover and names else 0
    order = [(i, names[i]) for i in range(start, len(names))] + [(i, names[i]) for i in range(start)]
    candidates = order[:1] if not failover else order
    candidates, reasons = flex_order(candidates, ctx.providers.config, mode=job.mode, deadline_at=job.deadline_at,
                                     now=now, min_deadline_h=ctx.settings.flex.min_deadline_h)
    earliest: datetime | None = None
    for idx, name in candidates:
        try:
            cfg = ctx.providers.config(name)
        except PipelineError:
            reasons.append(f"{name}: not configured")
            continue
        if not cfg.enabled:
            reasons.append(f"{name}: disabled")
            continue
        if policy == "official" and cfg.data_policy != "official":
            reasons.append(f"{name}: not an official provider (data_policy: official)")
            continue
        price = cfg.price_for(item.resolution)
        if job.max_price_usd is not None and (price is None or price > job.max_price_usd):
            reasons.append(f"{name}: price {price} above max_price {job.max_price_usd}")
            continue
        av = availability(s, name, now)
        if not av.ok:
            reasons.append(f"{name}: {av.status} ({av.reason})")
            if av.status in (ProviderStatus.PARKED, ProviderStatus.OPEN) and av.until is not None:
                earliest = av.until if earliest is None else min(earliest, av.until)
            continue
        return Choice(name, idx)
    if earliest is not None:
        return Choice(None, wait_until=earliest, reason="; ".join(reasons))
    return Choice(None, reason="no provider can take this item: " + "; ".join(reasons))


def next_provider_index(s: Session, job_id: int, name: str) -> int | None:
    """Where an item goes after `name` failed it or made it wait: the next provider in the job's order, or
    None when failover is off or there is no other provider."""
    job = s.get(Job, job_id)
    if job is None or not (job.manifest or {}).get("failover", True):
        return None
    names = list(job.providers)
    if name not in names or len(names) < 2:
        return None
    return (names.index(name) + 1) % len(names)
