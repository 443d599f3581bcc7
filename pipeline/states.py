"""State names as str enums, straight into columns and logs."""

from __future__ import annotations

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


class JobState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


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
