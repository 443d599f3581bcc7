"""The admission gate's data: limits, answers and the adaptive policy (the Gate protocol the core calls through
is pipeline.core.ports.Gate).

One gate per provider and API key (`key`), shared by every worker. `acquire` checks, in one atomic step
on the gate's own clock, in this order:

    parked      park(key, until) is in force                      -> retry after `until`
    cooldown    a 429 carried the provider's delay                 -> retry after it ends
    daily       today's count reached the daily limit              -> retry after the day boundary
    concurrency in-flight slots are all taken (expired ones freed) -> retry after `concurrency_retry_s`
    rate        the next GCRA slot is more than `horizon_s` away   -> retry when it comes within the horizon
                (windowed limits: the next slot that keeps every `window_s` window within its count)

and otherwise admits: the caller gets its own slot (`wait_s` from now, never more than the horizon), one
count of today's quota and one in-flight slot (`token`, freed by `release` or after `inflight_ttl_s`).
A caller that is not admitted took nothing; it goes back to the dispatcher with `retry_after_s`.

Two ways to apply the rate. By default (`window_s` None) slots are spaced evenly, 1/rate apart (GCRA with no
burst): the right thing for a per-minute quota. A provider that counts requests over a short window (Kie.ai: 20
new tasks per 10 seconds) sets `window_s`: then at most `rate x window_s` requests are admitted in any window of
`window_s` seconds (a sliding log of the slots handed out, exact), and they may come at once, as the provider
allows, instead of being spread.

The per-minute rate adapts (`AdaptivePolicy`). A 429 cuts it once per overshoot (a 429 whose slot was
booked before the last cut is part of the overshoot that cut answered) to a little under the measured
rate of clean answers, i.e. what the provider really let through, cutting by 10-50% (x0.7 while nothing
is measured yet); the provider's own delay (`retry_after_s`) blocks admissions until it passes. Clean
answers raise the rate additively back toward the configured limit; for a minute after a cut, the climb
above what the cut found is a slow probe. Because slots are never booked further ahead than the horizon,
a cut takes effect at once.

Implementations: `redis.RedisGate` (shared; Redis' clock) and `local.LocalGate` (in-process, embedded
mode); tests/gate/ runs one contract suite against both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config import ProviderConfig

#: seconds in a day, for the daily-quota boundary
DAY_S = 86_400
#: default reservation horizon: a slot further away than this is not taken. Half a second: slots booked
#: before a cut are still sent after it, so the horizon bounds the 429s one overshoot costs
DEFAULT_HORIZON_S = 0.5
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
    #: count the rate over windows of this many seconds (burst up to the window's count); None = evenly spaced
    window_s: float | None = None

    def __post_init__(self) -> None:
        if self.rpm <= 0 or self.rpd <= 0 or self.concurrency <= 0:
            raise ValueError("rpm, rpd and concurrency must be positive")
        if not Decimal(0) <= self.headroom < Decimal(1):
            raise ValueError("headroom must be in [0, 1)")
        if not 0 <= self.day_reset_hour_utc <= 23:
            raise ValueError("day_reset_hour_utc must be in 0..23")
        if self.horizon_s < 0 or self.inflight_ttl_s <= 0:
            raise ValueError("horizon_s must be >= 0 and inflight_ttl_s > 0")
        if self.window_s is not None and not 0 < self.window_s <= DAY_S:
            raise ValueError("window_s must be in (0, 86400]")

    @property
    def rate_per_s(self) -> float:
        """The configured rate after headroom, in requests per second (at least 1 per minute)."""
        return max(float(Decimal(self.rpm) * (1 - self.headroom)), 1.0) / 60.0

    @property
    def window_count(self) -> int | None:
        """Requests admitted in any `window_s` window at the configured rate (None without a window)."""
        return None if self.window_s is None else window_cap(self.rate_per_s, self.window_s)

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
            window_s=provider.limits.window_s,
        )


@dataclass(frozen=True)
class AdaptivePolicy:
    """How the live rate follows 429s; every default written down. "Limit" = the configured rate after
    headroom. Chosen with a discrete-event simulation of this algorithm (tests/gate/test_gate_adaptive.py:
    600 items, 96 callers, a provider enforcing its real limit as a token bucket of one second's worth,
    latency 0.5-2 s). Real limit = configured: utilization 0.97, no 429. Real limit at 60% of the
    configured one, 429s answered at once with the bucket's delay (as the sandbox does): utilization ~1.0
    (the bucket's initial burst counts too), ~1% of requests 429, half of them before the first 429 can be
    seen; 429s answered only after the latency: ~2%. With 5-30 s latency: 0.90 and ~1.3%."""

    #: without a token, further 429s within this many seconds of a cut belong to the same overshoot
    decrease_window_s: float = 1.0
    #: a cut sets the rate to the measured rate of clean answers times this ...
    measured_factor: float = 0.97
    #: ... but within [deepest_cut, shallowest_cut] times the rate before the cut
    deepest_cut: float = 0.5
    shallowest_cut: float = 0.9
    #: the cut while nothing is measured yet (a full window of clean answers has not been seen)
    decrease_factor: float = 0.7
    #: clean answers are counted over this window (a sliding-window counter) for that measurement
    measure_window_s: float = 4.0
    #: each second of clean answers adds this fraction of the limit ...
    increase_per_s: float = 0.02
    #: ... times this for `probe_s` after a cut, above the rate a measured cut set (above `shallowest_cut`
    #: of the rate that was too high, after a blind cut): a slow probe near the real limit
    probe_fraction: float = 0.1
    probe_s: float = 60.0
    #: a silence longer than this between clean answers counts as only this much clean time
    max_clean_gap_s: float = 1.0
    #: the rate never goes below this fraction of the limit
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
    #: above this rate (per minute) the climb is a slow probe, while that lasts after the last cut; else None
    ceiling_per_min: float | None
    now_s: float


def window_cap(rate_per_s: float, window_s: float) -> int:
    """Requests allowed in one window at `rate_per_s` (at least 1). The Lua script computes the same."""
    return max(math.floor(rate_per_s * window_s + 1e-9), 1)


def day_index(now_s: float, reset_hour_utc: int) -> int:
    """The provider's day number at `now_s` (epoch seconds): it changes at `reset_hour_utc`."""
    return math.floor((now_s - reset_hour_utc * 3600) / DAY_S)


def next_day_start(now_s: float, reset_hour_utc: int) -> float:
    """Epoch seconds of the next day boundary after `now_s`."""
    return float((day_index(now_s, reset_hour_utc) + 1) * DAY_S + reset_hour_utc * 3600)


def booked_at(token: str | None) -> float | None:
    """When the slot of `token` was booked (gate clock): tokens are "<random id>:<epoch seconds>". None for
    no token or a foreign one."""
    if not token or ":" not in token:
        return None
    try:
        return float(token.rsplit(":", 1)[1])
    except ValueError:
        return None
