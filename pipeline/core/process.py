"""Processing one item: claim → provider choice → cache (single flight) → budget → gate → call → settle.
Every wait goes back to the database (state pending with next_attempt_at); nothing here sleeps longer than
the gate's short reservation horizon.

    routing.py   which provider takes the item
    policy.py    what an error, or a gate refusal, leads to (retry at T, fail over, park, pause, fail)
    settle.py    how a call's end is recorded (attempt, budget, ledger, cache, item state) in one transaction
    lifecycle.py the one writer of the item's state
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import select, update

from pipeline.core import budget, cache, lifecycle
from pipeline.core.call import Call, Outcome
from pipeline.core.context import Context
from pipeline.core.costs import estimate_cost
from pipeline.core.leases import claim, holding
from pipeline.core.routing import Choice, choose_provider, next_provider_index
from pipeline.core.settle import (
    after_call,
    block_item,
    close_attempt,
    end_item,
    record_paid,
    requeue,
    serve_from_cache,
    settle_budget,
    settle_failure,
    settle_success,
)
from pipeline.core.sweep import give_back
from pipeline.db.models import Attempt, Item, Job
from pipeline.errors import PipelineError, ProviderError
from pipeline.gate.base import GateLimits
from pipeline.logging_setup import log_context, set_log_job
from pipeline.money import ZERO
from pipeline.providers.base import CallHooks, ImageRequest, ResumableProvider
from pipeline.states import AttemptOutcome, ItemState

__all__ = ["Outcome", "process_item"]

log = logging.getLogger("pipeline.process")


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
                give_back(s, item_id, ctx.owner, now, next_attempt_at=now + timedelta(seconds=ctx.policy.error_wait_s))
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
            end_item(s, item, ctx.owner, ItemState.FAILED, choice.reason, now)
            return Outcome.FAILED
        decision = cache.reserve(s, item.cache_key, item.id, now, force=item.force)
        if decision.decision == cache.Decision.HIT:
            pass  # served below, outside this transaction (storage copy first)
        elif decision.decision == cache.Decision.WAIT:
            lifecycle.retry_at(s, item.id, ctx.owner, now + timedelta(seconds=ctx.policy.cache_wait_s), now)
            return Outcome.RETRY
        region = job.region
    if decision.decision == cache.Decision.HIT:
        return serve_from_cache(ctx, item, ctx.owner, decision)
    return _reserve_and_call(ctx, item, region, choice)


def _reserve_and_call(ctx: Context, item: Item, region: str | None, choice: Choice) -> Outcome:
    """Budget, then the gate, then the call; each refusal sends the item back (or ends it) at once."""
    assert choice.name is not None
    name = choice.name
    cfg = ctx.providers.config(name)
    caps = ctx.settings.budget
    estimate = estimate_cost(cfg, item.resolution, len(item.references), len(item.prompt))
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        if estimate is None:
            job = s.get(Job, item.job_id)
            if (job is not None and job.max_usd is not None) or caps.daily_usd is not None \
                    or caps.monthly_usd is not None:
                block_item(ctx, s, item, ctx.owner,
                           f"{name} has no price for {item.resolution}: an unpriced call cannot be budgeted", now)
                return Outcome.BLOCKED
            estimate = ZERO
        resv = budget.reserve(s, item.job_id, estimate, caps, now)
        if resv.verdict != budget.Verdict.RESERVED:
            s.rollback()
        else:  # the item records what it holds, so whoever gives it back can settle it (sweep.give_back)
            lifecycle.hold(s, item.id, ctx.owner, estimate, resv.periods)
    if resv.verdict == budget.Verdict.BLOCKED:
        with ctx.sessions.begin() as s:
            block_item(ctx, s, item, ctx.owner, f"budget: the {resv.scope} cap leaves no room for {estimate} USD",
                       now)
        return Outcome.BLOCKED
    if resv.verdict == budget.Verdict.WAIT:
        with ctx.sessions.begin() as s:
            ok = lifecycle.retry_at(s, item.id, ctx.owner, now + timedelta(seconds=ctx.policy.budget_wait_s), now)
        return Outcome.RETRY if ok else Outcome.LOST_LEASE

    admission = ctx.gate.acquire(name, GateLimits.from_provider(cfg))
    if not admission.admitted:
        with ctx.sessions.begin() as s:
            budget.settle(s, item.job_id, resv.periods, estimate, ZERO)
            d = ctx.policy.not_admitted(admission.retry_after_s, now=now,
                                        next_provider=lambda: next_provider_index(s, item.job_id, name))
            requeue(s, item.id, ctx.owner, d, now)
        return Outcome.RETRY
    try:
        if admission.wait_s > 0:
            ctx.sleep(admission.wait_s)
        return _call(ctx, _start_call(ctx, item, name, resv), region, admission.token)
    finally:
        if admission.token is not None:
            token = admission.token
            after_call(lambda: ctx.gate.release(name, token), "release")


def _start_call(ctx: Context, item: Item, name: str, resv: budget.Reservation) -> Call:
    """Write the attempt row (outcome started, maybe billed) and count the attempt, before the call."""
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        attempt = Attempt(item_id=item.id, job_id=item.job_id, provider=name, lease_owner=ctx.owner,
                          outcome=AttemptOutcome.STARTED, maybe_billed=True, started_at=now)
        s.add(attempt)
        lifecycle.start_attempt(s, item.id, ctx.owner, name)
        s.flush()
        return Call(item=item, provider=name, estimate=resv.amount, periods=resv.periods, attempt_id=attempt.id,
                    attempt=item.attempts + 1, owner=ctx.owner)


def _call(ctx: Context, call: Call, region: str | None, token: str | None) -> Outcome:
    item, name = call.item, call.provider

    def save_remote_id(remote_id: str) -> None:
        with ctx.sessions.begin() as s2:
            s2.execute(update(Attempt).where(Attempt.id == call.attempt_id).values(remote_id=remote_id))

    resume_id = _resumable_remote_id(ctx, item.id, name, call.attempt_id)
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
        after_call(lambda: ctx.gate.feedback(name, ok=False, rate_limited=limited, retry_after_s=retry_after,
                                             token=token), "feedback")
        return settle_failure(ctx, call, e, latency_ms)
    except PipelineError as e:  # a reference that can no longer be read, etc.: the item cannot run
        now = ctx.clock()
        with ctx.sessions.begin() as s:
            abandoned = close_attempt(s, call.attempt_id, now, outcome=AttemptOutcome.TERMINAL,
                                      error_class="input", detail=str(e), maybe_billed=False)
            settle_budget(s, call, ZERO, abandoned=abandoned)
            end_item(s, item, call.owner, ItemState.FAILED, str(e), now)
        return Outcome.FAILED
    latency_ms = int((time.monotonic() - t0) * 1000)
    after_call(lambda: ctx.gate.feedback(name, ok=True, rate_limited=False, retry_after_s=None, token=token),
               "feedback")
    return record_paid(ctx, call.attempt_id, lambda: settle_success(ctx, call, result, latency_ms))


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
