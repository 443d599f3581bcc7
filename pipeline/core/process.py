"""Processing one item: claim → provider choice → cache (single flight) → budget → gate → call → validate →
store → ledger and state in one transaction. Every wait goes back to the database (state pending with
next_attempt_at); nothing here sleeps longer than the gate's short reservation horizon.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from pipeline.config import BudgetCaps
from pipeline.core import budget, cache, lifecycle, thumbs
from pipeline.core.alerts import claim_alerts, send_alerts
from pipeline.core.context import Context
from pipeline.core.costs import estimate_cost, list_cost
from pipeline.core.leases import claim, holding
from pipeline.core.providers_state import availability, record_fault, record_success, set_status
from pipeline.core.sweep import give_back
from pipeline.db.models import Attempt, Item, Job, LedgerEntry
from pipeline.errors import (
    DailyQuotaExceeded,
    PipelineError,
    ProviderError,
    ProviderLevelError,
    StorageError,
    TerminalError,
)
from pipeline.gate.backoff import backoff_s
from pipeline.gate.base import GateLimits
from pipeline.logging_setup import log_context, set_log_job
from pipeline.money import ZERO
from pipeline.providers.base import CallHooks, ImageRequest, ImageResult, ResumableProvider
from pipeline.states import AttemptOutcome, ItemState, ProviderStatus

log = logging.getLogger("pipeline.process")

#: how long an item waits before looking again at a cache entry another item is filling
CACHE_WAIT_S = 1.0
#: how long an item waits when only in-flight budget reservations stand in the way
BUDGET_WAIT_S = 1.0
#: a gate wait longer than this sends the item to the job's next provider instead (failover on 429s)
FAILOVER_AFTER_WAIT_S = 2.0
#: how long the record of a paid answer is retried while the database is unreachable, and the pause between
DB_RETRY_S = 30.0
DB_RETRY_PAUSE_S = 1.0

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


class Outcome(StrEnum):
    SKIPPED = "skipped"  # not claimed (someone else has it, or not due, or final)
    SUCCEEDED = "succeeded"
    CACHED = "cached"
    RETRY = "retry"  # back to pending with next_attempt_at
    FAILED = "failed"
    BLOCKED = "blocked"
    LOST_LEASE = "lost_lease"


@dataclass(frozen=True)
class Choice:
    name: str | None
    index: int = 0
    wait_until: datetime | None = None
    reason: str = ""


def gate_limits(ctx: Context, name: str) -> GateLimits:
    return GateLimits.from_provider(ctx.providers.config(name))


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
    earliest: datetime | None = None
    reasons: list[str] = []
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


def _next_provider_index(s: Session, job_id: int, name: str) -> int | None:
    """Where an item goes after `name` failed it or made it wait: the next provider in the job's order, or
    None when failover is off or there is no other provider."""
    job = s.get(Job, job_id)
    if job is None or not (job.manifest or {}).get("failover", True):
        return None
    names = list(job.providers)
    if name not in names or len(names) < 2:
        return None
    return (names.index(name) + 1) % len(names)


def _retry_later(ctx: Context, item_id: int, at: datetime, reason: str | None = None) -> Outcome:
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        ok = lifecycle.retry_at(s, item_id, ctx.owner, at, now, reason=reason)
    return Outcome.RETRY if ok else Outcome.LOST_LEASE


def _finish(ctx: Context, s: Session, item: Item, state: ItemState, reason: str | None, now: datetime) -> bool:
    ok = lifecycle.finish(s, item.id, ctx.owner, state, now, reason=reason)
    if state in (ItemState.FAILED, ItemState.BLOCKED, ItemState.CANCELLED):
        cache.abandon(s, item.cache_key, item.id)
    return ok


def process_item(ctx: Context, item_id: int) -> Outcome:
    # every line logged while this item is processed carries its ids; its lease is renewed until we return
    with log_context(item_id=item_id), holding(ctx.owner, item_id):
        return _process_item(ctx, item_id)


def _process_item(ctx: Context, item_id: int) -> Outcome:
    now = ctx.clock()
    item = claim(ctx.sessions, item_id, ctx.owner, ctx.settings.worker.lease_s, now)
    if item is None:
        return Outcome.SKIPPED
    set_log_job(item.job_id)
    try:
        return _process_claimed(ctx, item)
    except Exception:
        # An unexpected fault (a bug, the database gone): give the item back so it is not stuck until its
        # lease expires; if even that fails, the sweeper returns it when the lease runs out.
        log.exception("item %s: unexpected error", item_id)
        try:
            with ctx.sessions.begin() as s:
                now = ctx.clock()
                give_back(s, item_id, ctx.owner, now, ctx.settings.budget, next_attempt_at=now + timedelta(seconds=5))
        except Exception:
            log.warning("item %s: could not release; the sweeper will", item_id)
        return Outcome.RETRY


def _process_claimed(ctx: Context, item: Item) -> Outcome:
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        job = s.get(Job, item.job_id)
        assert job is not None
        choice = choose_provider(ctx, s, job, item, now)
        if choice.name is None:
            if choice.wait_until is not None:
                lifecycle.retry_at(s, item.id, ctx.owner, choice.wait_until, now, reason=choice.reason)
                return Outcome.RETRY
            _finish(ctx, s, item, ItemState.FAILED, choice.reason, now)
            return Outcome.FAILED
        decision = cache.reserve(s, item.cache_key, item.id, now, force=item.force)
        if decision.decision == cache.Decision.HIT:
            pass  # served below, outside this transaction (storage copy first)
        elif decision.decision == cache.Decision.WAIT:
            lifecycle.retry_at(s, item.id, ctx.owner, now + timedelta(seconds=CACHE_WAIT_S), now)
            return Outcome.RETRY
        job_id, region = job.id, job.region
    if decision.decision == cache.Decision.HIT:
        return _serve_from_cache(ctx, item, decision)
    return _call_provider(ctx, item, job_id, region, choice)


def _serve_from_cache(ctx: Context, item: Item, decision: cache.CacheDecision) -> Outcome:
    assert decision.object_key is not None
    object_key = decision.object_key
    try:
        url = ctx.storage.copy(object_key, item.output_key)
    except StorageError as e:
        return _retry_later(ctx, item.id, ctx.clock() + timedelta(seconds=10), f"storage: {e}")
    thumb = thumbs.ensure_thumbnail(ctx.storage, item.cache_key, lambda: ctx.storage.get(object_key))
    now = ctx.clock()
    list_usd = decision.list_cost_usd if decision.list_cost_usd is not None else list_cost(
        item.resolution, len(item.references))
    with ctx.sessions.begin() as s:
        if not lifecycle.finish(s, item.id, ctx.owner, ItemState.CACHED, now, stored_url=url, cost_usd=ZERO,
                                thumb_key=thumb):
            return Outcome.LOST_LEASE
        s.add(LedgerEntry(job_id=item.job_id, item_id=item.id, provider="cache", kind="cache_hit",
                          resolution=item.resolution, cost_usd=ZERO, list_cost_usd=list_usd,
                          cost_source="cache", day=now.date(), created_at=now))
    return Outcome.CACHED


def _call_provider(ctx: Context, item: Item, job_id: int, region: str | None, choice: Choice) -> Outcome:
    assert choice.name is not None
    name = choice.name
    cfg = ctx.providers.config(name)
    caps = ctx.settings.budget
    estimate = estimate_cost(cfg, item.resolution, len(item.references), len(item.prompt))
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        if estimate is None:
            job = s.get(Job, job_id)
            if (job is not None and job.max_usd is not None) or caps.daily_usd is not None \
                    or caps.monthly_usd is not None:
                _finish(ctx, s, item, ItemState.BLOCKED,
                        f"{name} has no price for {item.resolution}: an unpriced call cannot be budgeted", now)
                return Outcome.BLOCKED
            estimate = ZERO
        resv = budget.reserve(s, job_id, estimate, caps, now)
        if resv.verdict != budget.Verdict.RESERVED:
            s.rollback()
        else:  # the item records what it holds, so whoever gives it back can settle it (sweep.give_back)
            lifecycle.hold(s, item.id, ctx.owner, estimate)
    if resv.verdict == budget.Verdict.BLOCKED:
        with ctx.sessions.begin() as s:
            _finish(ctx, s, item, ItemState.BLOCKED,
                    f"budget: the {resv.scope} cap leaves no room for {estimate} USD", now)
        return Outcome.BLOCKED
    if resv.verdict == budget.Verdict.WAIT:
        return _retry_later(ctx, item.id, now + timedelta(seconds=BUDGET_WAIT_S))

    admission = ctx.gate.acquire(name, gate_limits(ctx, name))
    if not admission.admitted:
        wait_s = max(0.05, admission.retry_after_s)
        with ctx.sessions.begin() as s:
            budget.settle(s, job_id, estimate, ZERO, caps, now)
            nxt: int | None = None
            if wait_s > FAILOVER_AFTER_WAIT_S:
                nxt = _next_provider_index(s, job_id, name)
                if nxt is not None:  # another provider can take it now rather than wait for this one
                    wait_s = 0.05
            lifecycle.retry_at(s, item.id, ctx.owner, now + timedelta(seconds=wait_s), now, provider_index=nxt)
        return Outcome.RETRY
    try:
        if admission.wait_s > 0:
            ctx.sleep(admission.wait_s)
        return _attempt(ctx, item, job_id, region, name, estimate, admission.token)
    finally:
        if admission.token is not None:
            _after_call(lambda: ctx.gate.release(name, admission.token), "release")


def _attempt(ctx: Context, item: Item, job_id: int, region: str | None, name: str, estimate: Decimal,
             token: str | None = None) -> Outcome:
    caps = ctx.settings.budget
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        attempt = Attempt(item_id=item.id, job_id=job_id, provider=name, lease_owner=ctx.owner,
                          outcome=AttemptOutcome.STARTED, maybe_billed=True, started_at=now)
        s.add(attempt)
        lifecycle.start_attempt(s, item.id, ctx.owner, name, estimate)
        s.flush()
        attempt_id = attempt.id
        attempts_so_far = item.attempts + 1

    def save_remote_id(remote_id: str) -> None:
        with ctx.sessions.begin() as s2:
            s2.execute(update(Attempt).where(Attempt.id == attempt_id).values(remote_id=remote_id))

    resume_id = _resumable_remote_id(ctx, item.id, name, attempt_id)
    t0 = time.monotonic()
    try:
        request = ImageRequest(
            prompt=item.prompt, resolution=item.resolution, aspect_ratio=item.aspect_ratio,
            output_format=item.output_format,
            references=tuple(ctx.load_reference(r) for r in item.references), key=str(item.id))
        provider = ctx.providers.get(name, region)
        if resume_id is not None and isinstance(provider, ResumableProvider):
            # the last call timed out with its remote work still going: wait for it instead of paying again
            save_remote_id(resume_id)
            result = provider.resume(resume_id, request)
        else:
            result = provider.generate(request, CallHooks(submitted=save_remote_id))
    except ProviderError as e:
        latency_ms = int((time.monotonic() - t0) * 1000)
        limited, retry_after = e.error_class == "rate_limited", e.retry_after_s
        _after_call(lambda: ctx.gate.feedback(name, ok=False, rate_limited=limited, retry_after_s=retry_after,
                                              token=token), "feedback")
        return _settle_failure(ctx, item, job_id, name, attempt_id, attempts_so_far, estimate, e, latency_ms)
    except PipelineError as e:  # a reference that can no longer be read, etc.: the item cannot run
        with ctx.sessions.begin() as s:
            abandoned = _close_attempt(s, attempt_id, ctx.clock(), outcome=AttemptOutcome.TERMINAL,
                                       error_class="input", detail=str(e), maybe_billed=False)
            _settle_budget(s, job_id, estimate, ZERO, caps, ctx.clock(), abandoned=abandoned)
            _finish(ctx, s, item, ItemState.FAILED, str(e), ctx.clock())
        return Outcome.FAILED
    latency_ms = int((time.monotonic() - t0) * 1000)
    _after_call(lambda: ctx.gate.feedback(name, ok=True, rate_limited=False, retry_after_s=None, token=token),
                "feedback")
    return _record_paid(ctx, attempt_id,
                        lambda: _settle_success(ctx, item, job_id, name, attempt_id, estimate, result, latency_ms))


def _record_paid(ctx: Context, attempt_id: int, record: Callable[[], Outcome]) -> Outcome:
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


def _after_call(fn: Callable[[], None], what: str) -> None:
    """Gate bookkeeping after a call (feedback, release, park) is best effort: a gate that is unreachable
    (Redis restarting) must not turn a paid answer into an error; its in-flight slot expires on its own."""
    try:
        fn()
    except Exception as e:
        log.warning("admission gate %s failed (%s: %s); the call's result is kept", what, type(e).__name__, e)


def _resumable_remote_id(ctx: Context, item_id: int, name: str, current_attempt: int) -> str | None:
    """The remote handle of this item's previous call on `name`, when that call ended without an answer
    (timeout or abandoned lease) and may still produce the image we may already have paid for."""
    with ctx.sessions() as s:
        prev = s.scalar(select(Attempt).where(Attempt.item_id == item_id, Attempt.id != current_attempt)
                        .order_by(Attempt.id.desc()).limit(1))
    if prev is None or prev.provider != name or not prev.remote_id:
        return None
    if prev.outcome == AttemptOutcome.ABANDONED or (prev.outcome == AttemptOutcome.RETRYABLE
                                                    and prev.error_class == "timeout"):
        return prev.remote_id
    return None


def _close_attempt(s: Session, attempt_id: int, now: datetime, *, outcome: str, http_status: int | None = None,
                   error_class: str | None = None, detail: str | None = None, latency_ms: int | None = None,
                   cost: Decimal | None = None, cost_source: str | None = None, maybe_billed: bool) -> bool:
    """Record how a call ended. Returns True when the sweeper had given the item back meanwhile (the attempt
    was 'abandoned'): it counted the call's reservation as spent already (see `_settle_budget`)."""
    was = s.scalar(select(Attempt.outcome).where(Attempt.id == attempt_id).with_for_update())
    s.execute(update(Attempt).where(Attempt.id == attempt_id).values(
        outcome=outcome, http_status=http_status, error_class=error_class,
        error_detail=detail[:2000] if detail else None, latency_ms=latency_ms, cost_usd=cost,
        cost_source=cost_source, maybe_billed=maybe_billed, finished_at=now,
    ))
    return was == AttemptOutcome.ABANDONED


def _settle_budget(s: Session, job_id: int, estimate: Decimal, cost: Decimal, caps: BudgetCaps, now: datetime, *,
                   abandoned: bool) -> None:
    """Replace a call's reservation by its cost; after a give-back (abandoned) only the difference is left."""
    if abandoned:
        budget.settle(s, job_id, ZERO, cost - estimate, caps, now)
    else:
        budget.settle(s, job_id, estimate, cost, caps, now)


def _settle_failure(ctx: Context, item: Item, job_id: int, name: str, attempt_id: int, attempts: int,
                    estimate: Decimal, e: ProviderError, latency_ms: int) -> Outcome:
    now = ctx.clock()
    caps = ctx.settings.budget
    w = ctx.settings.worker
    with ctx.sessions.begin() as s:
        outcome = (AttemptOutcome.TERMINAL if isinstance(e, TerminalError)
                   else AttemptOutcome.PROVIDER_LEVEL if isinstance(e, ProviderLevelError)
                   else AttemptOutcome.RETRYABLE)
        billed = e.cost_usd or ZERO
        abandoned = _close_attempt(s, attempt_id, now, outcome=outcome, http_status=e.http_status,
                                   error_class=e.error_class, detail=e.message, latency_ms=latency_ms,
                                   maybe_billed=e.maybe_billed, cost=e.cost_usd,
                                   cost_source="provider" if e.cost_usd is not None else None)
        _settle_budget(s, job_id, estimate, billed, caps, now, abandoned=abandoned)
        if billed > 0:  # a call the provider billed without giving a usable image: it still costs
            s.add(LedgerEntry(job_id=job_id, item_id=item.id, attempt_id=attempt_id, provider=name, kind="call",
                              resolution=item.resolution, cost_usd=billed, list_cost_usd=ZERO,
                              cost_source="provider", day=now.date(), created_at=now))
        lifecycle.hold(s, item.id, ctx.owner, ZERO)
        if isinstance(e, TerminalError):
            _finish(ctx, s, item, ItemState.FAILED, f"{name}: {e.message}", now)
            return Outcome.FAILED
        if isinstance(e, ProviderLevelError):
            if isinstance(e, DailyQuotaExceeded):
                until = e.until or now + timedelta(hours=1)
                set_status(s, name, ProviderStatus.PARKED, f"{e.error_class}: {e.message}", until, now)
                _after_call(lambda: ctx.gate.park(name, until.timestamp(), e.error_class), "park")
            else:
                set_status(s, name, ProviderStatus.PAUSED, f"{e.error_class}: {e.message}", None, now)
            # the item is not at fault: it goes back at once and the provider choice moves past this one
            lifecycle.retry_at(s, item.id, ctx.owner, now, now, reason=f"{name}: {e.message}", refund_attempt=True)
            return Outcome.RETRY
        if record_fault(s, name, now):
            log.warning("provider %s: circuit open after repeated faults", name)
        if attempts >= w.max_attempts:
            _finish(ctx, s, item, ItemState.FAILED,
                    f"{name}: gave up after {attempts} attempts; last error: {e.error_class}: {e.message}", now)
            return Outcome.FAILED
        delay = backoff_s(attempts, w.backoff_base_s, w.backoff_cap_s, ctx.rng)
        if e.retry_after_s is not None:
            delay = max(e.retry_after_s, min(delay, e.retry_after_s + 1.0))
        # the next attempt starts at the next provider in the job's order (failover on 429s and faults)
        nxt = _next_provider_index(s, job_id, name)
        if nxt is not None:
            delay = min(delay, 0.5)  # another provider can take it now: no reason to wait for this one
        lifecycle.retry_at(s, item.id, ctx.owner, now + timedelta(seconds=delay), now, provider_index=nxt,
                           reason=f"{name}: {e.error_class}: {e.message}")
    return Outcome.RETRY


def _settle_success(ctx: Context, item: Item, job_id: int, name: str, attempt_id: int, estimate: Decimal,
                    result: ImageResult, latency_ms: int) -> Outcome:
    caps = ctx.settings.budget
    content_type = result.mime_type or CONTENT_TYPES.get(item.output_format, "application/octet-stream")
    ext = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}.get(content_type, item.output_format)
    obj_key = cache.cache_object_key(item.cache_key, ext)
    meta = {"job-id": str(job_id), "item-id": str(item.id), "item-key": item.key[:200], "provider": name,
            "cache-key": item.cache_key}
    stored_url: str | None = None
    storage_error: str | None = None
    thumb: str | None = None
    try:
        ctx.storage.put(obj_key, result.data, content_type, meta)
        stored_url = ctx.storage.copy(obj_key, item.output_key)
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
        abandoned = _close_attempt(s, attempt_id, now, outcome=AttemptOutcome.SUCCEEDED,
                                   http_status=result.http_status, latency_ms=latency_ms, cost=result.cost_usd,
                                   cost_source=result.cost_source, maybe_billed=False)
        _settle_budget(s, job_id, estimate, result.cost_usd, caps, now, abandoned=abandoned)
        s.add(LedgerEntry(job_id=job_id, item_id=item.id, attempt_id=attempt_id, provider=name, kind="image",
                          resolution=item.resolution, cost_usd=result.cost_usd, list_cost_usd=list_usd,
                          cost_source=result.cost_source, day=now.date(), created_at=now))
        if storage_error is not None:
            # Retryable storage faults never get here (the spool keeps the paid image until the store is back);
            # this is a refusal such as AccessDenied or NoSuchBucket: the configuration must be fixed first.
            _finish(ctx, s, item, ItemState.FAILED, f"storage: {storage_error}", now)
            return Outcome.FAILED
        record_success(s, name, now)
        alerts = claim_alerts(s, job_id, caps, now)
        cache.complete(s, item.cache_key, item.id, object_key=obj_key, content_type=content_type, provider=name,
                       resolution=item.resolution, cost_usd=result.cost_usd, list_cost_usd=list_usd, now=now)
        ok = lifecycle.finish(s, item.id, ctx.owner, ItemState.SUCCEEDED, now, stored_url=stored_url,
                              cost_usd=result.cost_usd, thumb_key=thumb)
    if alerts:
        send_alerts(alerts, caps.alert_webhook_url)
    if not ok:
        log.warning("item %s: lease lost while its call ran; the image is stored and paid once", item.id)
        return Outcome.LOST_LEASE
    return Outcome.SUCCEEDED

