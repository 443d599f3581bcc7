"""The batch tier (Gemini batch mode at half price): items of batch jobs are grouped into provider batches
by the background loop, polled, and matched back by key (the item id).

    due pending items of batch jobs ──claim (lease owned by the batch)──▶ cache (hits served at once)
        ──budget──▶ batches row `creating` (unique display_name) ──create──▶ `running` + an attempt per item
    poll (every batch.poll_s) ──done──▶ per item: image → store + ledger + cache + succeeded (one transaction)
                                                   error → classified like any call (retry, fail, pause)

An unclear create (timeout, dropped connection) leaves the row `creating`; the next tick lists the provider's
batches and adopts the one with our display_name before anything is created again. Items whose batch is lost
go back to pending; cancelling a job cancels its open batches.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, update

from pipeline.core import budget, cache, lifecycle
from pipeline.core.call import Call
from pipeline.core.context import Context
from pipeline.core.costs import estimate_cost
from pipeline.core.ports import BatchClients
from pipeline.core.settle import (
    block_item,
    close_attempt,
    end_item,
    serve_from_cache,
    settle_budget,
    settle_failure,
    settle_success,
)
from pipeline.db.models import Attempt, Batch, Item, Job
from pipeline.errors import PipelineError, ProviderError
from pipeline.providers.base import ImageRequest, ImageResult
from pipeline.providers.gemini_batch import BatchState as RemoteState
from pipeline.states import OPEN_BATCH_STATES, AttemptOutcome, BatchState, ItemState, JobState

log = logging.getLogger("pipeline.batch")

#: an item waits in its batch at most this long before its lease runs out and the sweeper frees it
BATCH_LEASE = timedelta(hours=49)


def _owner(display_name: str) -> str:
    return f"batch:{display_name}"[:64]


def batch_providers(ctx: Context, job: Job) -> list[str]:
    return [n for n in job.providers if n in ctx.settings.providers
            and ctx.providers.config(n).kind == "gemini-batch" and ctx.providers.config(n).enabled]


def _request(ctx: Context, item: Item) -> ImageRequest:
    return ImageRequest(prompt=item.prompt, resolution=item.resolution, aspect_ratio=item.aspect_ratio,
                        output_format=item.output_format,
                        references=tuple(ctx.load_reference(r) for r in item.references), key=str(item.id))


def submit_batches(ctx: Context, clients: BatchClients, now: datetime) -> int:
    """Group due items of batch jobs into new batches (one per job and provider). Returns batches created."""
    with ctx.sessions() as s:
        jobs = list(s.scalars(select(Job).where(Job.batch.is_(True), Job.state == JobState.ACTIVE)))
    created = 0
    for job in jobs:
        names = batch_providers(ctx, job)
        if not names:
            continue
        created += _submit_for_job(ctx, clients, job, names[0], now)
    return created


def _submit_for_job(ctx: Context, clients: BatchClients, job: Job, provider: str, now: datetime) -> int:
    cfg = ctx.providers.config(provider)
    display_name = f"pl-{job.id}-{uuid.uuid4().hex[:12]}"
    owner = _owner(display_name)
    with ctx.sessions.begin() as s:
        q = (select(Item.id).where(Item.job_id == job.id, Item.state == ItemState.PENDING, Item.next_attempt_at <= now)
             .order_by(Item.id).limit(ctx.settings.batch.max_items))
        if s.get_bind().dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        ids = list(s.scalars(q))
        if not ids:
            return 0
        lifecycle.claim_many(s, ids, owner, now + BATCH_LEASE, now)
    members: list[Item] = []
    for item_id in ids:
        with ctx.sessions.begin() as s:
            item = s.get(Item, item_id)
            if item is None or item.lease_owner != owner:
                continue
            decision = cache.reserve(s, item.cache_key, item.id, now, force=item.force)
            if decision.decision == cache.Decision.WAIT:
                lifecycle.retry_at(s, item.id, owner, now + timedelta(seconds=5), now)
                continue
        if decision.decision == cache.Decision.HIT:
            serve_from_cache(ctx, item, owner, decision)
            continue
        est = estimate_cost(cfg, item.resolution, len(item.references), len(item.prompt)) or Decimal(0)
        with ctx.sessions.begin() as s:
            resv = budget.reserve(s, job.id, est, ctx.settings.budget, now)
            if resv.verdict != budget.Verdict.RESERVED:
                s.rollback()
            else:  # held by the item from now on, so whoever gives it back settles it (sweep.give_back)
                lifecycle.hold(s, item.id, owner, est, resv.periods)
        if resv.verdict != budget.Verdict.RESERVED:
            with ctx.sessions.begin() as s:
                if resv.verdict == budget.Verdict.BLOCKED:
                    block_item(ctx, s, item, owner, f"budget: the {resv.scope} cap leaves no room for {est} USD", now)
                else:
                    lifecycle.retry_at(s, item.id, owner, now + timedelta(seconds=5), now)
            continue
        members.append(item)
    if not members:
        return 0
    with ctx.sessions.begin() as s:
        s.add(Batch(job_id=job.id, provider=provider, display_name=display_name, state=BatchState.CREATING,
                    item_ids=[i.id for i in members], next_poll_at=now, created_at=now, updated_at=now))
        for item in members:
            s.add(Attempt(item_id=item.id, job_id=job.id, provider=provider, lease_owner=owner,
                          outcome=AttemptOutcome.STARTED, maybe_billed=True, started_at=now, remote_id=display_name,
                          cost_usd=None))
            lifecycle.start_attempt(s, item.id, owner, provider)
    try:
        requests = [(str(i.id), _request(ctx, i)) for i in members]
        handle = clients(provider, job.region).create(display_name, requests)
    except PipelineError as e:
        if isinstance(e, ProviderError) and e.maybe_billed:
            log.warning("batch %s: unclear create (%s); will look it up by display name", display_name, e)
            return 1
        _create_failed(ctx, display_name, e, now)
        return 0
    with ctx.sessions.begin() as s:
        s.execute(update(Batch).where(Batch.display_name == display_name)
                  .values(remote_name=handle.name, state=BatchState.RUNNING, updated_at=now,
                          next_poll_at=now + timedelta(seconds=ctx.settings.batch.poll_s)))
    log.info("batch %s: %d items submitted to %s as %s", display_name, len(members), provider, handle.name)
    return 1


def _create_failed(ctx: Context, display_name: str, e: PipelineError, now: datetime) -> None:
    """The create was refused: every member's attempt settles with that error (retry, fail or pause)."""
    with ctx.sessions.begin() as s:
        batch = s.scalar(select(Batch).where(Batch.display_name == display_name))
        assert batch is not None
        batch.state, batch.error, batch.updated_at = BatchState.LOST, str(e)[:2000], now
        ids = list(batch.item_ids)
        provider = batch.provider
    err = e if isinstance(e, ProviderError) else ProviderError(str(e), provider=provider, error_class="input")
    _settle_members(ctx, display_name, provider, ids, {str(i): err for i in ids}, now)


def _members(ctx: Context, owner: str, ids: list[int]) -> list[Item]:
    with ctx.sessions() as s:
        return list(s.scalars(select(Item).where(Item.id.in_(ids), Item.lease_owner == owner,
                                                 Item.state == ItemState.RUNNING)))


def _settle_members(ctx: Context, display_name: str, provider: str, ids: list[int],
                    outcomes: dict[str, ImageResult | ProviderError], now: datetime) -> None:
    owner = _owner(display_name)
    members = _members(ctx, owner, ids)
    with ctx.sessions() as s:
        cancelled = {j for j, st in s.execute(select(Job.id, Job.state).where(
            Job.id.in_({i.job_id for i in members}))) if st == JobState.CANCELLED}
    for item in members:
        with ctx.sessions() as s:
            attempt_id = s.scalar(select(Attempt.id).where(Attempt.item_id == item.id, Attempt.lease_owner == owner,
                                                           Attempt.outcome == AttemptOutcome.STARTED))
        if attempt_id is None:
            continue
        outcome = outcomes.get(str(item.id))
        latency_ms = int((now - item.updated_at).total_seconds() * 1000) if item.updated_at else 0
        # the batch's attempt was counted when it was created: item.attempts is this call's number
        call = Call(item=item, provider=provider, estimate=item.reserved_usd,
                    periods=tuple(item.reserved_periods or ()), attempt_id=attempt_id, attempt=item.attempts,
                    owner=owner)
        if item.job_id in cancelled and not isinstance(outcome, ImageResult):
            with ctx.sessions.begin() as s:
                abandoned = close_attempt(s, attempt_id, now, outcome=AttemptOutcome.TERMINAL,
                                          error_class="cancelled", detail="job cancelled", maybe_billed=False)
                settle_budget(s, call, Decimal(0), abandoned=abandoned)
                end_item(s, item, owner, ItemState.CANCELLED, "cancelled", now)
            continue
        if isinstance(outcome, ImageResult):
            settle_success(ctx, call, outcome, latency_ms)
        else:
            err = outcome or ProviderError("missing from the batch output", provider=provider, error_class="missing")
            settle_failure(ctx, call, err, latency_ms)


def poll_batches(ctx: Context, clients: BatchClients, now: datetime) -> int:
    """Poll open batches that are due; settle the finished ones. Returns batches finished."""
    with ctx.sessions() as s:
        due = list(s.scalars(select(Batch).where(Batch.state.in_(sorted(OPEN_BATCH_STATES)),
                                                 Batch.next_poll_at <= now)))
    finished = 0
    for b in due:
        try:
            finished += _poll_one(ctx, clients, b, now)
        except PipelineError as e:
            log.warning("batch %s: poll failed: %s", b.display_name, e)
            with ctx.sessions.begin() as s:
                s.execute(update(Batch).where(Batch.id == b.id).values(
                    next_poll_at=now + timedelta(seconds=ctx.settings.batch.poll_s), updated_at=now))
    return finished


def _poll_one(ctx: Context, clients: BatchClients, b: Batch, now: datetime) -> int:
    with ctx.sessions() as s:
        region = s.scalar(select(Job.region).where(Job.id == b.job_id))
    client = clients(b.provider, region)
    if b.state == BatchState.CREATING:
        found = client.find_by_display_name(b.display_name)
        if found is None:
            if now - b.created_at > timedelta(seconds=ctx.settings.batch.create_grace_s):
                err = ProviderError("batch create was never confirmed", provider=b.provider,
                                    error_class="batch_lost")
                with ctx.sessions.begin() as s:
                    s.execute(update(Batch).where(Batch.id == b.id).values(state=BatchState.LOST, updated_at=now))
                _settle_members(ctx, b.display_name, b.provider, list(b.item_ids),
                                {str(i): _retryable(err) for i in b.item_ids}, now)
                return 1
            _next_poll(ctx, b, now)
            return 0
        with ctx.sessions.begin() as s:
            s.execute(update(Batch).where(Batch.id == b.id).values(remote_name=found.name, state=BatchState.RUNNING,
                                                                    updated_at=now))
        b.remote_name = found.name
    assert b.remote_name is not None
    status = client.get(b.remote_name)
    if not status.done:
        with ctx.sessions.begin() as s:
            s.execute(update(Batch).where(Batch.id == b.id).values(remote_state=str(status.state), updated_at=now,
                                                                    next_poll_at=now + timedelta(
                                                                        seconds=ctx.settings.batch.poll_s)))
        return 0
    members = _members(ctx, _owner(b.display_name), list(b.item_ids))
    requests = {str(i.id): _request(ctx, i) for i in members}
    outcomes = client.results(status, requests)
    _settle_members(ctx, b.display_name, b.provider, list(b.item_ids), outcomes, now)
    with ctx.sessions.begin() as s:
        s.execute(update(Batch).where(Batch.id == b.id).values(
            state=BatchState.CANCELLED if status.state == RemoteState.CANCELLED else BatchState.DONE,
            remote_state=str(status.state), error=status.error, updated_at=now))
    return 1


def _retryable(err: ProviderError) -> ProviderError:
    from pipeline.errors import ProviderUnavailable

    return ProviderUnavailable(err.message, provider=err.provider, error_class=err.error_class)


def _next_poll(ctx: Context, b: Batch, now: datetime) -> None:
    with ctx.sessions.begin() as s:
        s.execute(update(Batch).where(Batch.id == b.id).values(
            next_poll_at=now + timedelta(seconds=ctx.settings.batch.poll_s), updated_at=now))


def cancel_job_batches(ctx: Context, clients: BatchClients, job_id: int, now: datetime) -> int:
    """Cancel a job's open batches at the provider; their items end cancelled when the poll sees it."""
    with ctx.sessions() as s:
        open_ = list(s.scalars(select(Batch).where(Batch.job_id == job_id, Batch.state == BatchState.RUNNING)))
        region = s.scalar(select(Job.region).where(Job.id == job_id))
    for b in open_:
        if b.remote_name:
            try:
                clients(b.provider, region).cancel(b.remote_name)
            except PipelineError as e:
                log.warning("batch %s: cancel failed: %s", b.display_name, e)
        with ctx.sessions.begin() as s:
            s.execute(update(Batch).where(Batch.id == b.id).values(next_poll_at=now, updated_at=now))
    return len(open_)


__all__ = ["cancel_job_batches", "poll_batches", "submit_batches"]
