"""Settlement: how a call ended becomes, in one transaction, its attempt row, its budget (the reservation
replaced by the real cost), its ledger row, the item's next state and the provider's state. Shared by the
sync path (pipeline.core.process) and the batch tier (pipeline.core.batch).

    settle_success   paid image: store it, then attempt + budget + ledger + cache + item succeeded
    settle_failure   error: attempt + budget (+ ledger when billed) + the retry policy's decision
    serve_from_cache cache hit: copy the stored image, ledger row at $0, item cached
    record_paid      retry the record of a paid answer while the database is unreachable
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from pipeline.core import budget, cache, lifecycle, thumbs
from pipeline.core.alerts import claim_alerts, send_alerts
from pipeline.core.call import Call, Outcome
from pipeline.core.context import Context
from pipeline.core.costs import list_cost
from pipeline.core.policy import Action, Decision
from pipeline.core.providers_state import record_fault, record_success, set_status
from pipeline.core.routing import next_provider_index
from pipeline.db.models import Attempt, Item, LedgerEntry
from pipeline.errors import ProviderError, StorageError
from pipeline.money import ZERO
from pipeline.providers.base import ImageResult
from pipeline.states import AttemptOutcome, ItemState, ProviderStatus

log = logging.getLogger("pipeline.process")

#: how long the record of a paid answer is retried while the database is unreachable, and the pause between
DB_RETRY_S = 30.0
DB_RETRY_PAUSE_S = 1.0

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


def close_attempt(s: Session, attempt_id: int, now: datetime, *, outcome: str, http_status: int | None = None,
                  error_class: str | None = None, detail: str | None = None, latency_ms: int | None = None,
                  cost: Decimal | None = None, cost_source: str | None = None, maybe_billed: bool) -> bool:
    """Record how a call ended. Returns True when the sweeper had given the item back meanwhile (the attempt
    was 'abandoned'): it counted the call's reservation as spent already (see `settle_budget`)."""
    was = s.scalar(select(Attempt.outcome).where(Attempt.id == attempt_id).with_for_update())
    s.execute(update(Attempt).where(Attempt.id == attempt_id).values(
        outcome=outcome, http_status=http_status, error_class=error_class,
        error_detail=detail[:2000] if detail else None, latency_ms=latency_ms, cost_usd=cost,
        cost_source=cost_source, maybe_billed=maybe_billed, finished_at=now,
    ))
    return was == AttemptOutcome.ABANDONED


def settle_budget(s: Session, call: Call, cost: Decimal, *, abandoned: bool) -> None:
    """Replace a call's reservation by its cost, in the periods it was reserved in; after a give-back
    (abandoned: the sweeper counted the reservation as spent) only the difference is left."""
    if abandoned:
        budget.settle(s, call.job_id, call.periods, ZERO, cost - call.estimate)
    else:
        budget.settle(s, call.job_id, call.periods, call.estimate, cost)


def end_item(s: Session, item: Item, owner: str, state: ItemState, reason: str, now: datetime) -> bool:
    """A running item fails, is blocked or cancelled: its cache reservation goes, so another item may try."""
    ok = lifecycle.finish(s, item.id, owner, state, now, reason=reason)
    cache.abandon(s, item.cache_key, item.id)
    return ok


def block_item(ctx: Context, s: Session, item: Item, owner: str, reason: str, now: datetime) -> bool:
    """A running item is blocked by the budget: it ends `blocked`, and the context's hook hears of it in the same
    transaction (the run's budget notification, claimed once per run by pipeline.notify)."""
    ok = end_item(s, item, owner, ItemState.BLOCKED, reason, now)
    if ok:
        ctx.on_blocked(s, item.job_id, now)
    return ok


def requeue(s: Session, item_id: int, owner: str, d: Decision, now: datetime) -> bool:
    """Apply a decision that sends the item back to pending (retry, fail over, park, pause)."""
    assert d.action != Action.FAIL
    return lifecycle.retry_at(s, item_id, owner, d.at or now, now, reason=d.reason or None,
                              provider_index=d.provider_index, refund_attempt=d.refund_attempt)


def after_call(fn: Callable[[], None], what: str) -> None:
    """Gate bookkeeping after a call (feedback, release, park) is best effort: a gate that is unreachable
    (Redis restarting) must not turn a paid answer into an error; its in-flight slot expires on its own."""
    try:
        fn()
    except Exception as e:
        log.warning("admission gate %s failed (%s: %s); the call's result is kept", what, type(e).__name__, e)


def settle_failure(ctx: Context, call: Call, e: ProviderError, latency_ms: int) -> Outcome:
    now = ctx.clock()
    item, name = call.item, call.provider
    with ctx.sessions.begin() as s:
        outcome = ctx.policy.classify(e)
        billed = e.cost_usd or ZERO
        abandoned = close_attempt(s, call.attempt_id, now, outcome=outcome, http_status=e.http_status,
                                  error_class=e.error_class, detail=e.message, latency_ms=latency_ms,
                                  maybe_billed=e.maybe_billed, cost=e.cost_usd,
                                  cost_source="provider" if e.cost_usd is not None else None)
        settle_budget(s, call, billed, abandoned=abandoned)
        if billed > 0:  # a call the provider billed without giving a usable image: it still costs
            s.add(LedgerEntry(job_id=call.job_id, item_id=item.id, attempt_id=call.attempt_id, provider=name,
                              kind="call", resolution=item.resolution, cost_usd=billed, list_cost_usd=ZERO,
                              cost_source="provider", day=now.date(), created_at=now))
        lifecycle.hold(s, item.id, call.owner, ZERO)
        if outcome == AttemptOutcome.RETRYABLE and record_fault(s, name, now):
            log.warning("provider %s: circuit open after repeated faults", name)
        d = ctx.policy.after_error(e, provider=name, attempt=call.attempt, now=now,
                                   next_provider=lambda: next_provider_index(s, call.job_id, name))
        if d.action == Action.FAIL:
            end_item(s, item, call.owner, ItemState.FAILED, d.reason, now)
            return Outcome.FAILED
        if d.action == Action.PARK:
            until = d.until or now
            set_status(s, name, ProviderStatus.PARKED, f"{e.error_class}: {e.message}", until, now)
            after_call(lambda: ctx.gate.park(name, until.timestamp(), e.error_class), "park")
        elif d.action == Action.PAUSE:
            set_status(s, name, ProviderStatus.PAUSED, f"{e.error_class}: {e.message}", None, now)
        # PARK and PAUSE: the item is not at fault; it goes back at once and the choice moves past this provider
        requeue(s, item.id, call.owner, d, now)
    return Outcome.RETRY


def settle_success(ctx: Context, call: Call, result: ImageResult, latency_ms: int) -> Outcome:
    item, name = call.item, call.provider
    caps = ctx.settings.budget
    content_type = result.mime_type or CONTENT_TYPES.get(item.output_format, "application/octet-stream")
    ext = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}.get(content_type, item.output_format)
    obj_key = cache.cache_object_key(item.cache_key, ext)
    meta = {"job-id": str(call.job_id), "item-id": str(item.id), "item-key": item.key[:200], "provider": name,
            "cache-key": item.cache_key}
    stored_url: str | None = None
    storage_error: str | None = None
    thumb: str | None = None
    try:
        ctx.storage.put(obj_key, result.data, content_type, meta)
        try:
            stored_url = ctx.storage.copy(obj_key, item.output_key)
        except StorageError as e:
            if not e.retryable:
                raise
            # the store went away between the put and the copy: a put of the bytes we hold is spooled
            stored_url = ctx.storage.put(item.output_key, result.data, content_type, meta)
    except StorageError as e:
        storage_error = str(e)
    else:
        thumb = thumbs.store_thumbnail(ctx.storage, item.cache_key, result.data)
    now = ctx.clock()
    cfg = ctx.providers.config(name)
    list_usd = (result.cost_usd if result.cost_source == "usage" and cfg.data_policy == "official"
                else list_cost(item.resolution, len(item.references)))
    with ctx.sessions.begin() as s:
        # the call was paid for: its attempt, ledger row and budget settle whatever happens to the item
        abandoned = close_attempt(s, call.attempt_id, now, outcome=AttemptOutcome.SUCCEEDED,
                                  http_status=result.http_status, latency_ms=latency_ms, cost=result.cost_usd,
                                  cost_source=result.cost_source, maybe_billed=False)
        settle_budget(s, call, result.cost_usd, abandoned=abandoned)
        s.add(LedgerEntry(job_id=call.job_id, item_id=item.id, attempt_id=call.attempt_id, provider=name,
                          kind="image", resolution=item.resolution, cost_usd=result.cost_usd, list_cost_usd=list_usd,
                          cost_source=result.cost_source, day=now.date(), created_at=now))
        if storage_error is not None:
            # Retryable storage faults never get here (the spool keeps the paid image until the store is back,
            # even when the store goes away between the put and the copy); this is a refusal such as
            # AccessDenied or NoSuchBucket: the configuration must be fixed first.
            end_item(s, item, call.owner, ItemState.FAILED, f"storage: {storage_error}", now)
            return Outcome.FAILED
        record_success(s, name, now)
        alerts = claim_alerts(s, call.job_id, call.periods)
        cache.complete(s, item.cache_key, item.id, object_key=obj_key, content_type=content_type, provider=name,
                       resolution=item.resolution, cost_usd=result.cost_usd, list_cost_usd=list_usd, now=now)
        ok = lifecycle.finish(s, item.id, call.owner, ItemState.SUCCEEDED, now, stored_url=stored_url,
                              cost_usd=result.cost_usd, thumb_key=thumb)
    if alerts:
        send_alerts(alerts, caps.alert_webhook_url, ctx.http)
    if not ok:
        log.warning("item %s: lease lost while its call ran; the image is stored and paid once", item.id)
        return Outcome.LOST_LEASE
    return Outcome.SUCCEEDED


def serve_from_cache(ctx: Context, item: Item, owner: str, decision: cache.CacheDecision) -> Outcome:
    """Answer a running item from a stored image: a copy to its output key, a $0 ledger row, state cached."""
    assert decision.object_key is not None
    object_key = decision.object_key
    try:
        url = ctx.storage.copy(object_key, item.output_key)
    except StorageError as e:
        now = ctx.clock()
        with ctx.sessions.begin() as s:
            ok = lifecycle.retry_at(s, item.id, owner, now + timedelta(seconds=ctx.policy.storage_wait_s), now,
                                    reason=f"storage: {e}")
        return Outcome.RETRY if ok else Outcome.LOST_LEASE
    thumb = thumbs.ensure_thumbnail(ctx.storage, item.cache_key, lambda: ctx.storage.get(object_key))
    now = ctx.clock()
    list_usd = decision.list_cost_usd if decision.list_cost_usd is not None else list_cost(
        item.resolution, len(item.references))
    with ctx.sessions.begin() as s:
        if not lifecycle.finish(s, item.id, owner, ItemState.CACHED, now, stored_url=url, cost_usd=ZERO,
                                thumb_key=thumb):
            return Outcome.LOST_LEASE
        s.add(LedgerEntry(job_id=item.job_id, item_id=item.id, provider="cache", kind="cache_hit",
                          resolution=item.resolution, cost_usd=ZERO, list_cost_usd=list_usd,
                          cost_source="cache", day=now.date(), created_at=now))
    return Outcome.CACHED


def record_paid(ctx: Context, attempt_id: int, record: Callable[[], Outcome]) -> Outcome:
    """Store and record a paid answer; while the database is unreachable (a restart, a failover) try again for
    up to DB_RETRY_S, since giving up means paying for the image again. Storing is idempotent, and a commit
    that went through before the connection broke is seen on the attempt row (no second ledger row)."""
    deadline = time.monotonic() + DB_RETRY_S
    while True:
        try:
            return record()
        except (OperationalError, InterfaceError) as e:
            if time.monotonic() >= deadline:
                raise
            log.warning("database unreachable while recording a paid call (%s); trying again", type(e).__name__)
        ctx.sleep(DB_RETRY_PAUSE_S)
        try:
            with ctx.sessions() as s:
                if s.scalar(select(Attempt.outcome).where(Attempt.id == attempt_id)) == AttemptOutcome.SUCCEEDED:
                    return Outcome.SUCCEEDED
        except (OperationalError, InterfaceError):
            continue
