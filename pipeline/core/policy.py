"""The retry policy: what happens to an item after a call went wrong, as data (in the way dramatiq's Retries
middleware and tenacity hold theirs). It decides; settlement (pipeline.core.settle) applies the decision.

    terminal error (blocked, invalid)      -> FAIL        the item fails with the provider's reason
    daily quota (ProviderLevelError)       -> PARK        the provider is parked until its reset; the item
                                                          goes back at once, the attempt not counted
    auth, no credit (ProviderLevelError)   -> PAUSE       the provider is paused until an operator resumes it;
                                                          the item goes back at once, the attempt not counted
    retryable, attempts left, next provider-> FAIL_OVER   due after at most `failover_delay_s`, on that provider
    retryable, attempts left               -> RETRY       due after a jittered exponential backoff (at least the
                                                          provider's Retry-After, at most `retry_after_slack_s`
                                                          more)
    retryable, `max_attempts` reached      -> FAIL        "gave up after N attempts"

The gate's refusals and the other short waits (cache owner busy, budget in flight) are decided here too. The
clock is the caller's (`now`), the randomness the policy's own `rng`: a test passes a seeded one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pipeline.config import WorkerSettings
from pipeline.errors import DailyQuotaExceeded, ProviderError, ProviderLevelError, TerminalError
from pipeline.gate.backoff import backoff_s
from pipeline.states import AttemptOutcome

#: a lookup of the job's next provider for this item (None: failover off, or no other provider); called only
#: when the decision needs it, since it reads the database
NextProvider = Callable[[], int | None]


class Action(StrEnum):
    RETRY = "retry"  # back to pending, due at `at`, same provider
    FAIL_OVER = "fail_over"  # back to pending, due at `at`, on provider `provider_index`
    PARK = "park"  # the provider is parked until `until`; the item is due at `at` (now)
    PAUSE = "pause"  # the provider is paused; the item is due at `at` (now)
    FAIL = "fail"  # the item fails with `reason`


@dataclass(frozen=True)
class Decision:
    action: Action
    #: how the attempt is recorded
    outcome: AttemptOutcome
    reason: str
    at: datetime | None = None
    provider_index: int | None = None
    #: PARK: until when the provider takes no calls
    until: datetime | None = None

    @property
    def refund_attempt(self) -> bool:
        """The provider, not the item, was at fault: the call does not count against the item's attempts."""
        return self.action in (Action.PARK, Action.PAUSE)


@dataclass(frozen=True)
class RetryPolicy:
    #: provider calls per item before it fails
    max_attempts: int = 6
    #: backoff before retry n: uniform in [0, min(cap, base * 2**(n-1))] ("full jitter")
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 300.0
    #: a provider's Retry-After is honoured, with at most this much of our own backoff on top
    retry_after_slack_s: float = 1.0
    #: when another provider can take a failed item, it is due after at most this long
    failover_delay_s: float = 0.5
    #: how long a provider is parked when its daily-quota error names no reset time
    park_default_s: float = 3600.0
    #: a gate wait longer than this sends the item to the job's next provider instead (failover on 429s)
    failover_after_wait_s: float = 2.0
    #: the least time before an item the gate did not admit is due again
    min_gate_wait_s: float = 0.05
    #: how long an item waits before looking again at a cache entry another item is filling
    cache_wait_s: float = 1.0
    #: how long an item waits when only in-flight budget reservations stand in the way
    budget_wait_s: float = 1.0
    #: how long an item waits when its cached image could not be copied to its output (storage down)
    storage_wait_s: float = 10.0
    #: how long an item waits after an unexpected error gave it back
    error_wait_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def from_settings(cls, worker: WorkerSettings, rng: random.Random | None = None) -> RetryPolicy:
        return cls(max_attempts=worker.max_attempts, backoff_base_s=worker.backoff_base_s,
                   backoff_cap_s=worker.backoff_cap_s, rng=rng or random.Random())

    @staticmethod
    def classify(e: ProviderError) -> AttemptOutcome:
        if isinstance(e, TerminalError):
            return AttemptOutcome.TERMINAL
        if isinstance(e, ProviderLevelError):
            return AttemptOutcome.PROVIDER_LEVEL
        return AttemptOutcome.RETRYABLE

    def after_error(self, e: ProviderError, *, provider: str, attempt: int, now: datetime,
                    next_provider: NextProvider) -> Decision:
        """The decision after call number `attempt` of an item on `provider` failed with `e`."""
        outcome = self.classify(e)
        if outcome == AttemptOutcome.TERMINAL:
            return Decision(Action.FAIL, outcome, f"{provider}: {e.message}")
        if outcome == AttemptOutcome.PROVIDER_LEVEL:
            reason = f"{provider}: {e.message}"
            if isinstance(e, DailyQuotaExceeded):
                until = e.until or now + timedelta(seconds=self.park_default_s)
                return Decision(Action.PARK, outcome, reason, at=now, until=until)
            return Decision(Action.PAUSE, outcome, reason, at=now)
        if attempt >= self.max_attempts:
            return Decision(Action.FAIL, outcome, f"{provider}: gave up after {attempt} attempts; last error: "
                                                  f"{e.error_class}: {e.message}")
        delay = backoff_s(attempt, self.backoff_base_s, self.backoff_cap_s, self.rng)
        if e.retry_after_s is not None:
            delay = max(e.retry_after_s, min(delay, e.retry_after_s + self.retry_after_slack_s))
        reason = f"{provider}: {e.error_class}: {e.message}"
        nxt = next_provider()
        if nxt is not None:  # another provider can take it now: no reason to wait for this one
            return Decision(Action.FAIL_OVER, outcome, reason, at=now + timedelta(seconds=min(delay,
                                                                                               self.failover_delay_s)),
                            provider_index=nxt)
        return Decision(Action.RETRY, outcome, reason, at=now + timedelta(seconds=delay))

    def not_admitted(self, retry_after_s: float, *, now: datetime, next_provider: NextProvider) -> Decision:
        """The gate refused the call (nothing was taken): wait its retry_after, or fail over when that is long."""
        wait_s = max(self.min_gate_wait_s, retry_after_s)
        if wait_s > self.failover_after_wait_s:
            nxt = next_provider()
            if nxt is not None:
                return Decision(Action.FAIL_OVER, AttemptOutcome.RETRYABLE, "",
                                at=now + timedelta(seconds=self.min_gate_wait_s), provider_index=nxt)
        return Decision(Action.RETRY, AttemptOutcome.RETRYABLE, "", at=now + timedelta(seconds=wait_s))
