"""State names as str enums, straight into columns and logs, and the item lifecycle as a table."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class ItemState(StrEnum):
    PENDING = "pending"  # waiting; due when next_attempt_at <= now
    QUEUED = "queued"  # published to the broker, not yet claimed
    RUNNING = "running"  # claimed under a lease
    SUCCEEDED = "succeeded"
    CACHED = "cached"
    FAILED = "failed"
    BLOCKED = "blocked"  # budget
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({ItemState.SUCCEEDED, ItemState.CACHED, ItemState.FAILED, ItemState.BLOCKED,
                          ItemState.CANCELLED})
ACTIVE_STATES = frozenset({ItemState.PENDING, ItemState.QUEUED, ItemState.RUNNING})

_P, _Q, _R = ItemState.PENDING, ItemState.QUEUED, ItemState.RUNNING

#: The item lifecycle: from each state, the states an item may move to. pipeline.core.lifecycle is the one
#: writer of `items.state`; each of its functions is a compare-and-set whose WHERE clause takes its source
#: states from this table, so a move not listed here matches no row and never happens.
#:
#:     pending  -> queued      dispatch publishes it             lifecycle.queue
#:     pending  -> running     claimed (a worker, or a batch)    lifecycle.claim, claim_many
#:     pending  -> pending     its spec changed on resubmission  lifecycle.reset
#:     pending  -> cancelled   its job was cancelled             lifecycle.cancel
#:     queued   -> running     claimed from its message          lifecycle.claim
#:     queued   -> pending     publish failed, message lost, job resumed, spec changed
#:                                                               lifecycle.unqueue, reset
#:     queued   -> cancelled   its job was cancelled             lifecycle.cancel
#:     running  -> pending     retry at T, or given back (lease expired, unexpected error)
#:                                                               lifecycle.retry_at, give_back
#:     running  -> succeeded | cached | failed | blocked | cancelled
#:                                                               lifecycle.finish
#:     final    -> pending     rerun, or submitted again         lifecycle.reset
TRANSITIONS: Mapping[ItemState, frozenset[ItemState]] = {
    _P: frozenset({_Q, _R, _P, ItemState.CANCELLED}),
    _Q: frozenset({_R, _P, ItemState.CANCELLED}),
    _R: frozenset({_P, *FINAL_STATES}),
    **{final: frozenset({_P}) for final in FINAL_STATES},
}


def sources(target: ItemState) -> frozenset[ItemState]:
    """The states the lifecycle allows a move into `target` from."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


class JobState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


class BatchState(StrEnum):
    """A provider batch as the batches table records it (the provider's own state is in remote_state)."""

    CREATING = "creating"  # row written, create call made or about to be; unclear until the provider names it
    RUNNING = "running"  # the provider has it; polled every batch.poll_s
    DONE = "done"  # results matched back to the items
    CANCELLED = "cancelled"  # cancelled at the provider (the job was cancelled)
    LOST = "lost"  # the create was refused or never confirmed: its items went back


OPEN_BATCH_STATES = frozenset({BatchState.CREATING, BatchState.RUNNING})


class CacheState(StrEnum):
    PENDING = "pending"  # reserved by an item whose call is (or will be) in flight
    READY = "ready"  # the object is stored


class AttemptOutcome(StrEnum):
    STARTED = "started"  # written before the call; still open = in flight or unknown
    SUCCEEDED = "succeeded"
    RETRYABLE = "retryable"
    TERMINAL = "terminal"
    PROVIDER_LEVEL = "provider_level"
    ABANDONED = "abandoned"  # its lease expired while open: outcome unknown, maybe billed


class ProviderStatus(StrEnum):
    OK = "ok"
    PAUSED = "paused"  # auth / insufficient quota: until an operator resumes
    PARKED = "parked"  # daily quota: until the reset time
    OPEN = "open"  # circuit open after repeated faults: until the cool-down ends, then one half-open probe
