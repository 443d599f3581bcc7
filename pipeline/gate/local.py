"""The in-process gate for the embedded mode: the same algorithm as the Redis scripts (gate/lua.py), under a
threading.Lock, on an injectable clock. Keep the two in step: tests/gate/ runs one contract suite on both.

The clock is wall-clock epoch seconds (default `time.time`), not monotonic: the daily count resets at the
provider's day boundary in UTC and `park` takes an epoch time, exactly as with Redis' `TIME`.
"""

from __future__ import annotations

import bisect
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
    booked_at,
    day_index,
    next_day_start,
    window_cap,
)


@dataclass
class _State:
    """One key's state; the names match the Redis hash fields in gate/lua.py."""

    tat: float = 0.0  # GCRA theoretical arrival time: the next free slot
    rate: float = 0.0  # live rate, requests/s (0 = not set yet)
    limit: float = 0.0  # configured rate after headroom, requests/s, as of the last acquire
    t_dec: float = 0.0  # time of the last cut (0 = never)
    ceiling: float = 0.0  # above this the climb is a slow probe, for probe_s after the last cut
    t_up: float = 0.0  # time of the last additive step
    win_start: float = 0.0  # sliding-window counter of clean answers (0 = not started)
    win_cur: int = 0
    win_prev: int = -1  # -1: no full window yet
    cool: float = 0.0  # no admissions before this (the provider's retry_after)
    park: float = 0.0
    park_reason: str = ""
    day: int = 0
    count: int = 0
    inflight: dict[str, float] = field(default_factory=dict)  # token -> expiry
    window: list[float] = field(default_factory=list)  # windowed limits: the slots handed out, sorted


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
            for token in [t for t, expiry in st.inflight.items() if expiry <= now]:
                del st.inflight[token]
            if len(st.inflight) >= limits.concurrency:
                return _refused(Reason.CONCURRENCY, self._policy.concurrency_retry_s)
            slot = max(now, st.tat) if limits.window_s is None else _window_slot(st, now, limits.window_s)
            if slot - now > limits.horizon_s:
                return _refused(Reason.RATE, slot - now - limits.horizon_s)
            if limits.window_s is None:
                st.tat = slot + 1.0 / st.rate
            else:
                bisect.insort(st.window, slot)
            st.count += 1
            token = f"{uuid.uuid4().hex}:{now:.6f}"
            st.inflight[token] = slot + limits.inflight_ttl_s
            return Admission(True, slot - now, 0.0, Reason.OK, token, slot)

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
                _cut(st, now, self._policy, booked_at(token))
            elif ok:
                _raise(st, now, self._policy)

    def park(self, key: str, until_epoch_s: float, reason: str) -> None:
        with self._lock:
            st = self._state(key)
            st.park, st.park_reason = until_epoch_s, reason

    def clear(self, key: str) -> None:
        """Forget everything about `key`: learnt rate, counts, park, in-flight slots."""
        with self._lock:
            self._states.pop(key, None)

    def snapshot(self, key: str, limits: GateLimits) -> GateSnapshot:
        with self._lock:
            now = self._clock()
            st = self._states.get(key) or _State()
            limit = limits.rate_per_s
            rate = min(st.rate, limit) if st.rate > 0 else limit
            parked = st.park > now
            probing = st.t_dec > 0 and now - st.t_dec < self._policy.probe_s
            return GateSnapshot(
                rate_per_min=rate * 60.0,
                limit_per_min=limit * 60.0,
                in_flight=sum(1 for expiry in st.inflight.values() if expiry > now),
                concurrency=limits.concurrency,
                today=st.count if st.day == day_index(now, limits.day_reset_hour_utc) else 0,
                daily_limit=limits.effective_rpd,
                parked_until=st.park if parked else None,
                park_reason=st.park_reason if parked else None,
                cooldown_until=st.cool if st.cool > now else None,
                ceiling_per_min=st.ceiling * 60.0 if probing else None,
                now_s=now,
            )


def _window_slot(st: _State, now: float, window_s: float) -> float:
    """The first time from `now` at which one more slot keeps every window of `window_s` seconds within the live
    rate's count: with the slots s_1 <= ... <= s_n still in the window and a count c, `now` while n < c, else
    s_(n-c+1) + window_s (by then s_1 .. s_(n-c+1) have left the window). A cut lowers c at once."""
    cutoff = now - window_s
    drop = bisect.bisect_right(st.window, cutoff)
    if drop:
        del st.window[:drop]
    cap = window_cap(st.rate, window_s)
    n = len(st.window)
    return now if n < cap else max(now, st.window[n - cap] + window_s)


def _refused(reason: Reason, retry_after_s: float) -> Admission:
    return Admission(False, 0.0, max(retry_after_s, 0.0), reason, None)


def _sync_limit(st: _State, limit: float, now: float) -> None:
    """First use: start at the limit. A changed limit caps the live rate (which then climbs to it)."""
    if st.rate <= 0:
        st.rate, st.limit, st.t_up = limit, limit, now
    elif st.limit != limit:
        st.limit = limit
        st.rate = min(st.rate, limit)


def _cut(st: _State, now: float, p: AdaptivePolicy, booked: float | None) -> None:
    """A 429: cut the rate, once per overshoot. A 429 whose slot was booked before the last cut belongs to
    the overshoot that cut already answered; without a token, one within `decrease_window_s` of it does.

    With a measurement, the rate goes to a little under what the provider let through, and the slow probe
    starts there. Without one (the first seconds: answers still in flight), a blind cut by
    `decrease_factor`, and the climb is quick up to `shallowest_cut` of the rate that was too high."""
    if st.rate <= 0:
        return
    if (booked <= st.t_dec) if booked is not None else (now - st.t_dec < p.decrease_window_s):
        return
    measured = _measured(st, now, p.measure_window_s)
    if measured > 0:
        target = measured * p.measured_factor
        new = min(max(target, st.rate * p.deepest_cut), st.rate * p.shallowest_cut)
        ceiling = new
    else:
        new = st.rate * p.decrease_factor
        ceiling = st.rate * p.shallowest_cut
    floor = st.limit * p.min_fraction
    st.rate, st.ceiling = max(new, floor), max(ceiling, floor)
    st.t_dec = st.t_up = now


def _raise(st: _State, now: float, p: AdaptivePolicy) -> None:
    """A clean answer: count it, and climb additively for the clean time since the last step."""
    _roll(st, now, p.measure_window_s)
    st.win_cur += 1
    if st.rate <= 0:
        return
    step = p.increase_per_s * st.limit * min(max(now - st.t_up, 0.0), p.max_clean_gap_s)
    if st.rate >= st.ceiling and now - st.t_dec < p.probe_s:
        step *= p.probe_fraction
    st.rate = min(st.limit, st.rate + step)
    st.t_up = now


def _roll(st: _State, now: float, window_s: float) -> None:
    """Advance the sliding-window counter to the window holding `now`."""
    if st.win_start <= 0:
        st.win_start = now
    elif now >= st.win_start + window_s:
        periods = math.floor((now - st.win_start) / window_s)
        st.win_prev = st.win_cur if periods == 1 else 0
        st.win_cur = 0
        st.win_start += periods * window_s


def _measured(st: _State, now: float, window_s: float) -> float:
    """Clean answers per second over the last window; 0 = unknown (no full window seen yet: early answers
    undercount, the calls still in flight have not answered)."""
    if st.win_start <= 0:
        return 0.0
    _roll(st, now, window_s)
    if st.win_prev < 0:
        return 0.0
    elapsed = max(now - st.win_start, 0.0)
    return (st.win_prev * (1.0 - min(elapsed / window_s, 1.0)) + st.win_cur) / window_s

