"""The in-process gate for the embedded mode: the same algorithm as the Redis scripts (gate/lua.py), under a
threading.Lock, on an injectable clock. Keep the two in step: tests/gate/ runs one contract suite on both.

The clock is wall-clock epoch seconds (default `time.time`), not monotonic: the daily count resets at the
provider's day boundary in UTC and `park` takes an epoch time, exactly as on Redis' `TIME`.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.gate.base import (
    AdaptivePolicy,
    Admission,
    GateLimits,
    GateSnapshot,
    Reason,
    day_index,
    next_day_start,
)


@dataclass
class _State:
    """One key's state; field names match the Redis hash fields of gate/lua.py."""

    tat: float = 0.0  # GCRA theoretical arrival time: the next free slot
    rate: float = 0.0  # live rate, requests/s (0 = not yet set)
    limit: float = 0.0  # configured rate after headroom, requests/s, as of the last acquire
    ceiling: float = 0.0  # the last rate found too high (0 = none)
    t_dec: float = 0.0  # time of the last cut
    t_up: float = 0.0  # time of the last additive step
    win_start: float = 0.0  # sliding-window counter of clean answers
    win_cur: int = 0
    win_prev: int = -1  # -1: no full window yet
    cool: float = 0.0  # no admissions before this (provider's retry_after)
    park: float = 0.0
    park_reason: str = ""
    day: int = 0
    count: int = 0
    inflight: dict[str, float] = field(default_factory=dict)  # token -> expiry


class LocalGate:
    """`Gate` for one process. `clock` returns epoch seconds; tests pass a fake one and never sleep."""

    def __init__(self, clock: Callable[[], float] = time.time, policy: AdaptivePolicy | None = None) -> None:
        self._clock = clock
        self._policy = policy or AdaptivePolicy()
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}

    def _state(self, key: str) -> _State:
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = _State()
        return st

    def acquire(self, key: str, limits: GateLimits) -> Admission:
        with self._lock:
            now = self._clock()
            st = self._state(key)
            _sync_limit(st, limits.rate_per_s, now)
            if st.park > now:
                return _refused(Reason.PARKED, st.park - now)
            if st.cool > now:
                return _refused(Reason.COOLDOWN, st.cool - now)
            day = day_index(now, limits.day_reset_hour_utc)
            if st.day != day:
                st.day, st.count = day, 0
            if st.count >= limits.effective_rpd:
                return _refused(Reason.DAILY, next_day_start(now, limits.day_reset_hour_utc) - now)
            _purge(st, now)
            if len(st.inflight) >= limits.concurrency:
                return _refused(Reason.CONCURRENCY, self._policy.concurrency_retry_s)
            slot = max(now, st.tat)
            wait = slot - now
            if wait > limits.horizon_s:
                return _refused(Reason.RATE, wait - limits.horizon_s)
            st.tat = slot + 1.0 / st.rate
            st.count += 1
            token = f"{uuid.uuid4().hex}:{now:.6f}"
            st.inflight[token] = slot + limits.inflight_ttl_s
            return Admission(True, wait, 0.0, Reason.OK, token, slot)

    def release(self, key: str, token: str) -> None:
        with self._lock:
            st = self._states.get(key)
            if st is not None:
                st.inflight.pop(token, None)

    def feedback(
        self, key: str, *, ok: bool, rate_limited: bool, retry_after_s: float | None, token: str | None = None
    ) -> None:
        with self._lock:
            now = self._clock()
            st = self._state(key)
            if rate_limited:
                if retry_after_s is not None and retry_after_s > 0:
                    st.cool = max(st.cool, now + retry_after_s)
                _on_429(st, now, self._policy, booked_at(token))
            elif ok:
                _on_ok(st, now, self._policy)

    def park(self, key: str, until_epoch_s: float, reason: str) -> None:
        with self._lock:
            st = self._state(key)
            st.park, st.park_reason = until_epoch_s, reason

    def snapshot(self, key: str, limits: GateLimits) -> GateSnapshot:
        with self._lock:
            now = self._clock()
            st = self._states.get(key) or _State()
            limit = limits.rate_per_s
            rate = min(st.rate, limit) if st.rate > 0 else limit
            live = sum(1 for exp in st.inflight.values() if exp > now)
            today = st.count if st.day == day_index(now, limits.day_reset_hour_utc) else 0
            remembered = st.ceiling > 0 and now - st.t_dec <= self._policy.ceiling_ttl_s
            return GateSnapshot(
                rate_per_min=rate * 60.0,
                limit_per_min=limit * 60.0,
                in_flight=live,
                concurrency=limits.concurrency,
                today=today,
                daily_limit=limits.effective_rpd,
                parked_until=st.park if st.park > now else None,
                park_reason=st.park_reason if st.park > now else None,
                cooldown_until=st.cool if st.cool > now else None,
                ceiling_per_min=st.ceiling * 60.0 if remembered else None,
                now_s=now,
            )


def _on_429(st: _State, now: float, p: AdaptivePolicy, booked: float | None) -> None:
    if st.rate <= 0:
        return
    if booked is not None:
        if booked < st.t_dec:
            return  # admitted before the last cut: the same overshoot, already counted
    elif now - st.t_dec < p.decrease_window_s:
        return
    measured = _measured(st, now, p.measure_window_s)
    new = st.rate * p.decrease_factor
    if measured > 0:
        new = min(new, measured * p.measured_factor)
    st.ceiling = st.rate
    st.rate = max(new, st.limit * p.min_fraction)
    st.t_dec = st.t_up = now


def _on_ok(st: _State, now: float, p: AdaptivePolicy) -> None:
    _roll(st, now, p.measure_window_s)
    st.win_cur += 1
    if st.rate <= 0:
        return
    gap = min(max(now - st.t_up, 0.0), p.max_clean_gap_s)
    st.t_up = now
    if st.ceiling > 0 and now - st.t_dec > p.ceiling_ttl_s:
        st.ceiling = 0.0
    step = p.increase_per_s * st.limit * gap
    if st.ceiling > 0 and st.rate >= st.ceiling:
        step *= p.probe_fraction
    st.rate = min(st.limit, st.rate + step)


def booked_at(token: str | None) -> float | None:
    """When the slot of `token` was booked (gate clock), or None for no or a foreign token."""
    if not token or ":" not in token:
        return None
    try:
        return float(token.rsplit(":", 1)[1])
    except ValueError:
        return None


def _refused(reason: Reason, retry_after_s: float) -> Admission:
    return Admission(False, 0.0, max(retry_after_s, 0.0), reason, None)


def _sync_limit(st: _State, limit: float, now: float) -> None:
    if st.rate <= 0:
        st.rate, st.limit, st.t_up = limit, limit, now
    elif st.limit != limit:
        st.limit = limit
        st.rate = min(st.rate, limit)


def _purge(st: _State, now: float) -> None:
    for token in [t for t, exp in st.inflight.items() if exp <= now]:
        del st.inflight[token]


def _roll(st: _State, now: float, window_s: float) -> None:
    """Advance the sliding-window counter to the window holding `now`."""
    if st.win_start <= 0:
        st.win_start = now
        return
    if now >= st.win_start + window_s:
        periods = math.floor((now - st.win_start) / window_s)
        st.win_prev = st.win_cur if periods == 1 else 0
        st.win_cur = 0
        st.win_start += periods * window_s


def _measured(st: _State, now: float, window_s: float) -> float:
    """Clean answers per second over the last window; 0 = unknown (none counted, or under a quarter window
    of history)."""
    if st.win_start <= 0:
        return 0.0
    _roll(st, now, window_s)
    elapsed = max(now - st.win_start, 0.0)
    if st.win_prev < 0:
        return st.win_cur / elapsed if elapsed >= window_s / 4 else 0.0
    return (st.win_prev * (1.0 - min(elapsed / window_s, 1.0)) + st.win_cur) / window_s
