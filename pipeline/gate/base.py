"""The admission gate seam: limits, answers, the adaptive policy and the Gate protocol.

One gate per provider and API key (`key`), shared by every worker. `acquire` checks, in one atomic step
on the gate's own clock, in this order:

    parked      park(key, until) is in force                      -> retry after `until`
    cooldown    a 429 carried the provider's delay                 -> retry after it ends
    daily       today's count reached the daily limit              -> retry after the day boundary
    concurrency in-flight slots are all taken (expired ones freed) -> retry after `concurrency_retry_s`
    rate        the next GCRA slot is more than `horizon_s` away   -> retry when it comes within the horizon

and otherwise admits: the caller gets its own slot (`wait_s` from now, never more than the horizon), one
count of today's quota and one in-flight slot (`token`, freed by `release` or after `inflight_ttl_s`).
A caller that is not admitted took nothing; it goes back to the dispatcher with `retry_after_s`.

The per-minute rate adapts (`AdaptivePolicy`): a 429 cuts it multiplicatively (at most once per
`decrease_window_s`, so one overshoot counts once) to no more than the measured rate of clean answers,
and clean answers raise it additively back toward the configured limit, slowly above the last rate
that was found too high. Implementations: `redis.RedisGate` (shared; Redis' clock) and
`local.LocalGate` (in-process, embedded mode); `tests/gate/` runs one contract suite against both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pipeline.config import ProviderConfig

#: seconds in a day, for the daily-quota boundary
DAY_S = 86_400
#: default reservation horizon: a slot further away than this is not taken
DEFAULT_HORIZON_S = 1.0
#: default in-flight token lifetime: a crashed worker's slot comes back after this
DEFAULT_INFLIGHT_TTL_S = 600.0


class Reason(StrEnum):
    OK = "ok"
    RATE = "rate"
    CONCURRENCY = "concurrency"
    DAILY = "daily"
    PARKED = "parked"
    COOLDOWN = "cooldown"


@dataclass(frozen=True)
class GateLimits:
    """One provider's limits as the gate applies them.

    Headroom applies to the rate and the daily count: `effective_rpd = floor(rpd * (1 - headroom))` (>= 1)
    and the rate is `rpm * (1 - headroom) / 60` per second, not floored to whole requests per minute (a
    10 rpm provider at 3% runs at 9.7/min, not 9). Concurrency is our own count, exact, with no headroom.
    """

    rpm: int
    rpd: int
    concurrency: int
    headroom: Decimal = Decimal("0.03")
    #: hour (UTC) at which the provider's daily count resets
    day_reset_hour_utc: int = 8
    #: a slot further away than this is not taken; keeps a rate cut effective at once
    horizon_s: float = DEFAULT_HORIZON_S
    #: lifetime of an in-flight slot that is never released (crashed worker); > the provider timeout
    inflight_ttl_s: float = DEFAULT_INFLIGHT_TTL_S

    def __post_init__(self) -> None:
        if self.rpm <= 0 or self.rpd <= 0 or self.concurrency <= 0:
            raise ValueError("rpm, rpd and concurrency must be positive")
        if not Decimal(0) <= self.headroom < Decimal(1):
            raise ValueError("headroom must be in [0, 1)")
        if not 0 <= self.day_reset_hour_utc <= 23:
            raise ValueError("day_reset_hour_utc must be in 0..23")
        if self.horizon_s < 0 or self.inflight_ttl_s <= 0:
            raise ValueError("horizon_s must be >= 0 and inflight_ttl_s > 0")

    @property
    def rate_per_s(self) -> float:
        """The configured rate after headroom, in requests per second (at least 1 per minute)."""
        return max(float(Decimal(self.rpm) * (1 - self.headroom)), 1.0) / 60.0

    @property
    def effective_rpd(self) -> int:
        return max(math.floor(Decimal(self.rpd) * (1 - self.headroom)), 1)

    @classmethod
    def from_provider(cls, provider: ProviderConfig, *, horizon_s: float = DEFAULT_HORIZON_S) -> GateLimits:
        """Limits for one provider; in-flight slots outlive its timeout by a minute."""
        return cls(
            rpm=provider.limits.rpm,
            rpd=provider.limits.rpd,
            concurrency=provider.limits.concurrency,
            headroom=provider.headroom,
            day_reset_hour_utc=provider.day_reset_hour_utc,
            horizon_s=horizon_s,
            inflight_ttl_s=provider.timeout_s + 60.0,
        )


@dataclass(frozen=True)
class AdaptivePolicy:
    """How the live rate follows 429s. Rates are fractions of the configured (after headroom) rate."""

    #: a 429 multiplies the rate by this
    decrease_factor: float = 0.7
    #: further 429s within this many seconds of a cut belong to the same overshoot and are not counted
    decrease_window_s: float = 1.0
    #: after a cut the rate is also at most this fraction of the measured rate of clean answers
    measured_factor: float = 0.95
    #: clean answers are counted over this window (a sliding-window counter) for that measurement
    measure_window_s: float = 2.0
    #: each second of clean answers adds this fraction of the configured rate
    increase_per_s: float = 0.02
    #: ... but only this fraction of it while above the last rate found too high (the ceiling)
    probe_fraction: float = 0.25
    #: the ceiling is forgotten after this many seconds without a 429
    ceiling_ttl_s: float = 60.0
    #: a silence longer than this between clean answers counts as this much clean time
    max_clean_gap_s: float = 1.0
    #: the rate never goes below this fraction of the configured rate
    min_fraction: float = 0.02
    #: retry_after_s when every in-flight slot is taken
    concurrency_retry_s: float = 1.0


@dataclass(frozen=True)
class Admission:
    """The gate's answer. Admitted: sleep `wait_s` (<= horizon), call, then `release(token)`.
    Not admitted: nothing was taken; come back after `retry_after_s` (the caller sets next_attempt_at)."""

    admitted: bool
    wait_s: float
    retry_after_s: float
    reason: Reason
    token: str | None
    #: the slot's time on the gate's clock (epoch seconds), for logs and tests; 0.0 when not admitted
    slot_at_s: float = 0.0


@dataclass(frozen=True)
class GateSnapshot:
    """What `pipeline providers` shows. Times are epoch seconds on the gate's clock."""

    #: live adaptive rate and the configured rate after headroom, requests per minute
    rate_per_min: float
    limit_per_min: float
    in_flight: int
    concurrency: int
    today: int
    daily_limit: int
    parked_until: float | None
    park_reason: str | None
    cooldown_until: float | None
    #: the last rate found too high (per minute), while remembered
    ceiling_per_min: float | None
    now_s: float


class Gate(Protocol):
    def acquire(self, key: str, limits: GateLimits) -> Admission:
        """Rate, daily count and in-flight slot in one atomic step (see module docstring)."""
        ...

    def release(self, key: str, token: str) -> None:
        """Give the in-flight slot back (idempotent; an expired or unknown token is a no-op)."""
        ...

    def feedback(self, key: str, *, ok: bool, rate_limited: bool, retry_after_s: float | None) -> None:
        """Report a call's outcome: clean (`ok`) raises the rate, `rate_limited` (429) cuts it and blocks
        new admissions for the provider's `retry_after_s` when given. Other failures change nothing."""
        ...

    def park(self, key: str, until_epoch_s: float, reason: str) -> None:
        """Refuse admissions (reason "parked") until then (daily quota, paused provider); 0 lifts it."""
        ...

    def snapshot(self, key: str, limits: GateLimits) -> GateSnapshot:
        """The live state, read-only."""
        ...


def day_index(now_s: float, reset_hour_utc: int) -> int:
    """The provider's day number at `now_s` (epoch seconds): it changes at `reset_hour_utc`."""
    return math.floor((now_s - reset_hour_utc * 3600) / DAY_S)


def next_day_start(now_s: float, reset_hour_utc: int) -> float:
    """Epoch seconds of the next day boundary after `now_s`."""
    return float((day_index(now_s, reset_hour_utc) + 1) * DAY_S + reset_hour_utc * 3600)
