"""Provider health: rolling success rate, p50/p95 latency, consecutive failures and a circuit breaker.

    closed ──`failure_threshold` failures in a row, or error rate > `error_rate_threshold`
    │         over the last `window` answers (once `min_samples` are in)──▶ open
    open ──`cooldown_s` passes──▶ half-open: `allow` hands out ONE probe (a lease of `probe_timeout_s`)
    half-open ──an answer ok──▶ closed (window cleared)   half-open ──a failure──▶ open (cool down again)
    a probe that never reports (crashed worker): its lease runs out and the next `allow` probes again

What counts as a failure is the caller's call: the provider's faults (5xx, timeouts, bad images), not a 429
(the gate's business), a content block or an invalid request (the item's). Latency percentiles are over the
clean answers in the window. Two twins with one contract (tests/gate/test_health.py): `RedisHealth`, shared by
every worker through a hash and a list per provider on Redis' clock, and `LocalHealth`, in-process on an
injectable clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import redis
from redis.commands.core import Script


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class HealthPolicy:
    #: answers kept per provider for the success rate and the latency percentiles
    window: int = 50
    #: failures in a row that open the circuit
    failure_threshold: int = 5
    #: an error rate above this over the window opens it too, once `min_samples` answers are in
    error_rate_threshold: float = 0.5
    min_samples: int = 20
    #: how long an open circuit refuses calls before one half-open probe
    cooldown_s: float = 30.0
    #: a probe that has not reported after this is presumed lost; the next caller probes again
    probe_timeout_s: float = 120.0


@dataclass(frozen=True)
class Permit:
    allowed: bool
    #: this caller is the half-open probe; its `record` closes or re-opens the circuit
    probe: bool = False
    #: not allowed: ask again after this
    retry_after_s: float = 0.0


@dataclass(frozen=True)
class HealthSnapshot:
    state: CircuitState
    samples: int
    success_rate: float | None
    p50_s: float | None
    p95_s: float | None
    consecutive_failures: int
    #: open or half-open: when it opened; open: when a probe may go (epoch seconds, the store's clock)
    opened_at: float | None
    retry_at: float | None


class Health(Protocol):
    def allow(self, key: str) -> Permit:
        """May a call to `key` go now? Closed: yes. Open: no until the cool-down ends, then one probe."""
        ...

    def record(self, key: str, *, ok: bool, latency_s: float) -> None:
        """One answer: ok, or a failure counted against the provider; `latency_s` of the call."""
        ...

    def snapshot(self, key: str) -> HealthSnapshot: ...

    def reset(self, key: str) -> None:
        """Forget `key`: closed, no history (an operator resumed the provider)."""
        ...


def summarize(state: CircuitState, outcomes: Iterable[tuple[bool, float]], consecutive: int,
              opened_at: float, policy: HealthPolicy) -> HealthSnapshot:
    """A snapshot from the stored pieces (shared by both twins)."""
    items = list(outcomes)
    lat = sorted(latency for ok, latency in items if ok)
    opened = state != CircuitState.CLOSED
    return HealthSnapshot(
        state=state,
        samples=len(items),
        success_rate=sum(ok for ok, _ in items) / len(items) if items else None,
        p50_s=_nearest_rank(lat, 0.50),
        p95_s=_nearest_rank(lat, 0.95),
        consecutive_failures=consecutive,
        opened_at=opened_at if opened else None,
        retry_at=opened_at + policy.cooldown_s if state == CircuitState.OPEN else None,
    )


def _nearest_rank(values: list[float], q: float) -> float | None:
    return values[max(math.ceil(q * len(values)) - 1, 0)] if values else None


@dataclass
class _Local:
    state: CircuitState = CircuitState.CLOSED
    consecutive: int = 0
    opened_at: float = 0.0
    probe_until: float = 0.0
    outcomes: deque[tuple[bool, float]] = field(default_factory=deque)


class LocalHealth:
    """`Health` for one process. `clock` returns epoch seconds; tests pass a fake one."""

    def __init__(self, policy: HealthPolicy | None = None, clock: Callable[[], float] = time.time) -> None:
        self._policy = policy or HealthPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, _Local] = {}

    def _get(self, key: str) -> _Local:
        st = self._keys.get(key)
        if st is None:
            st = self._keys[key] = _Local(outcomes=deque(maxlen=self._policy.window))
        return st

    def allow(self, key: str) -> Permit:
        p = self._policy
        with self._lock:
            now, st = self._clock(), self._get(key)
            if st.state == CircuitState.CLOSED:
                return Permit(True)
            if st.state == CircuitState.OPEN:
                if now < st.opened_at + p.cooldown_s:
                    return Permit(False, retry_after_s=st.opened_at + p.cooldown_s - now)
                st.state = CircuitState.HALF_OPEN
            elif now < st.probe_until:
                return Permit(False, retry_after_s=min(st.probe_until - now, p.cooldown_s))
            st.probe_until = now + p.probe_timeout_s
            return Permit(True, probe=True)

    def record(self, key: str, *, ok: bool, latency_s: float) -> None:
        p = self._policy
        with self._lock:
            now, st = self._clock(), self._get(key)
            st.outcomes.append((ok, latency_s))
            st.consecutive = 0 if ok else st.consecutive + 1
            if st.state == CircuitState.HALF_OPEN:
                if ok:
                    st.state = CircuitState.CLOSED
                    st.outcomes.clear()
                    st.outcomes.append((ok, latency_s))
                else:
                    st.state, st.opened_at = CircuitState.OPEN, now
            elif st.state == CircuitState.CLOSED and not ok:
                fails = sum(1 for good, _ in st.outcomes if not good)
                n = len(st.outcomes)
                if st.consecutive >= p.failure_threshold or (
                        n >= p.min_samples and fails / n > p.error_rate_threshold):
                    st.state, st.opened_at = CircuitState.OPEN, now

    def snapshot(self, key: str) -> HealthSnapshot:
        with self._lock:
            st = self._keys.get(key) or _Local()
            return summarize(st.state, st.outcomes, st.consecutive, st.opened_at, self._policy)

    def reset(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.17g', x) end
"""

#: ARGV: cooldown_s, probe_timeout_s. Returns {allowed, probe, retry_after_s}.
_ALLOW = _NOW + """
local f = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'probe_until')
local state, opened_at, probe_until = f[1] or 'closed', tonumber(f[2] or '0'), tonumber(f[3] or '0')
local cooldown, probe_timeout = tonumber(ARGV[1]), tonumber(ARGV[2])
if state == 'closed' then return {1, 0, '0'} end
if state == 'open' then
  if now < opened_at + cooldown then return {0, 0, fmt(opened_at + cooldown - now)} end
elseif now < probe_until then
  return {0, 0, fmt(math.min(probe_until - now, cooldown))}
end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', fmt(now + probe_timeout))
return {1, 1, '0'}
"""

#: KEYS: hash, list. ARGV: ok (1/0), latency_s, window, failure_threshold, error_rate_threshold, min_samples.
_RECORD = _NOW + """
local ok, window = ARGV[1] == '1', tonumber(ARGV[3])
local threshold, max_rate, min_samples = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local entry = ARGV[1] .. ':' .. ARGV[2]
local f = redis.call('HMGET', KEYS[1], 'state', 'consecutive')
local state, consecutive = f[1] or 'closed', tonumber(f[2] or '0')
redis.call('LPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], 0, window - 1)
if ok then consecutive = 0 else consecutive = consecutive + 1 end
redis.call('HSET', KEYS[1], 'consecutive', consecutive)
if state == 'half_open' then
  if ok then
    redis.call('DEL', KEYS[2])
    redis.call('LPUSH', KEYS[2], entry)
    redis.call('HSET', KEYS[1], 'state', 'closed')
  else
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', fmt(now))
  end
elseif state == 'closed' and not ok then
  local items = redis.call('LRANGE', KEYS[2], 0, -1)
  local fails = 0
  for _, item in ipairs(items) do
    if string.sub(item, 1, 1) == '0' then fails = fails + 1 end
  end
  if consecutive >= threshold or (#items >= min_samples and fails / #items > max_rate) then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', fmt(now))
  end
end
return 1
"""


class RedisHealth:
    """`Health` shared through Redis: `{prefix}:{<key>}:h` (state hash) and `{prefix}:{<key>}:o` (the last
    `window` answers, newest first, "ok:latency_s"). No I/O in the constructor."""

    def __init__(self, client: redis.Redis[Any], policy: HealthPolicy | None = None,
                 prefix: str = "health") -> None:
        self._client = client
        self._policy = policy or HealthPolicy()
        self._prefix = prefix
        self._scripts: dict[str, Script] = {}

    def _keys(self, key: str) -> list[str]:
        return [f"{self._prefix}:{{{key}}}:h", f"{self._prefix}:{{{key}}}:o"]

    def _run(self, body: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts.get(body)
        if script is None:
            script = self._scripts[body] = self._client.register_script(body)
        return script(keys=keys, args=args)

    def allow(self, key: str) -> Permit:
        p = self._policy
        allowed, probe, retry = self._run(_ALLOW, self._keys(key)[:1], [repr(p.cooldown_s),
                                                                          repr(p.probe_timeout_s)])
        return Permit(bool(int(allowed)), bool(int(probe)), float(_text(retry)))

    def record(self, key: str, *, ok: bool, latency_s: float) -> None:
        p = self._policy
        self._run(_RECORD, self._keys(key), ["1" if ok else "0", repr(float(latency_s)), p.window,
                                             p.failure_threshold, repr(p.error_rate_threshold), p.min_samples])

    def snapshot(self, key: str) -> HealthSnapshot:
        h, o = self._keys(key)
        pipe = self._client.pipeline(transaction=True)
        pipe.hmget(h, ["state", "consecutive", "opened_at"])
        pipe.lrange(o, 0, -1)
        (state, consecutive, opened_at), entries = pipe.execute()
        outcomes = []
        for raw in entries:
            flag, _, latency = _text(raw).partition(":")
            outcomes.append((flag == "1", float(latency)))
        return summarize(CircuitState(_text(state or "closed")), outcomes, int(consecutive or 0),
                         float(opened_at or 0), self._policy)

    def reset(self, key: str) -> None:
        self._client.delete(*self._keys(key))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
