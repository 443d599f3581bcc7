"""Rate limits as the providers enforce them: a token bucket per minute quota and a daily counter."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.clock import monotonic_s

#: length of the sandbox's "day" for rpd limits
DAY_S = 86_400.0


@dataclass(frozen=True)
class Admission:
    ok: bool
    #: which quota refused: "rpm" or "rpd" (empty when ok)
    quota: str = ""
    #: seconds until a retry can succeed
    retry_after_s: float = 0.0


class TokenBucket:
    """`rate_per_s` tokens a second up to `capacity`; starts full."""

    def __init__(self, rate_per_s: float, capacity: float, clock: Callable[[], float]) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = max(1.0, capacity)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()

    def take(self) -> float:
        """Take one token: 0.0 when taken, else the seconds until one is available (nothing taken)."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s


class Limiter:
    """rpm (token bucket, capacity = bucket_s seconds of rate) and rpd for one provider name. Thread safe."""

    def __init__(
        self,
        rpm: int | None,
        rpd: int | None,
        bucket_s: float,
        clock: Callable[[], float] = monotonic_s,
    ) -> None:
        self.rpm = rpm
        self.rpd = rpd
        self._bucket_s = bucket_s
        self._clock = clock
        self._lock = threading.Lock()
        self._bucket: TokenBucket | None = None
        self._day_start = 0.0
        self._day_count = 0
        self.reset()

    def reset(self) -> None:
        with self._lock:
            rate = (self.rpm or 0) / 60.0
            self._bucket = TokenBucket(rate, rate * self._bucket_s, self._clock) if self.rpm else None
            self._day_start = self._clock()
            self._day_count = 0

    def seconds_to_day_reset(self) -> float:
        return max(0.0, self._day_start + DAY_S - self._clock())

    def admit(self) -> Admission:
        with self._lock:
            now = self._clock()
            if now - self._day_start >= DAY_S:
                self._day_start, self._day_count = now, 0
            if self.rpd is not None and self._day_count >= self.rpd:
                return Admission(False, "rpd", self._day_start + DAY_S - now)
            if self._bucket is not None:
                wait = self._bucket.take()
                if wait > 0:
                    return Admission(False, "rpm", wait)
            self._day_count += 1
            return Admission(True)
