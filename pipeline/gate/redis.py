"""The shared admission gate: the algorithm of gate/local.py as Redis Lua scripts, timed by Redis' own clock
(`TIME`), so every worker on every host sees one rate, one daily count and one set of in-flight slots.

Keys per gate key K (a provider): `{prefix}:{K}` a hash (GCRA `tat`, live `rate`, configured `limit`,
`ceiling`, `t_dec`, `t_up`, clean-answer window `win_start`/`win_cur`/`win_prev`, `cool`, `park`,
`park_reason`, `day`, `count`) and `{prefix}:{K}:inflight` a sorted set of tokens scored by expiry.
Scripts are registered lazily (no I/O in the constructor); Redis runs each one atomically.
"""

from __future__ import annotations

from typing import Any

import redis

from pipeline.gate.base import AdaptivePolicy, Admission, GateLimits, GateSnapshot, Reason
from pipeline.gate.local import booked_at

#: state of an idle gate expires after this (a provider unused for two days starts fresh)
STATE_TTL_S = 172_800

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

_HELPERS = """
local function num(v, d) local n = tonumber(v); if n == nil then return d end; return n end
local function roll(h, now, window)
  local ws = num(redis.call('HGET', h, 'win_start'), 0)
  if ws <= 0 then redis.call('HSET', h, 'win_start', now); return end
  if now >= ws + window then
    local periods = math.floor((now - ws) / window)
    local cur = num(redis.call('HGET', h, 'win_cur'), 0)
    local prev = 0
    if periods == 1 then prev = cur end
    redis.call('HSET', h, 'win_prev', prev, 'win_cur', 0, 'win_start', ws + periods * window)
  end
end
local function measured(h, now, window)
  local ws = num(redis.call('HGET', h, 'win_start'), 0)
  if ws <= 0 then return 0 end
  roll(h, now, window)
  ws = num(redis.call('HGET', h, 'win_start'), 0)
  local cur = num(redis.call('HGET', h, 'win_cur'), 0)
  local prev = num(redis.call('HGET', h, 'win_prev'), -1)
  local elapsed = math.max(now - ws, 0)
  if prev < 0 then
    if elapsed >= window / 4 then return cur / elapsed end
    return 0
  end
  return (prev * (1 - math.min(elapsed / window, 1)) + cur) / window
end
"""

ACQUIRE = _NOW + _HELPERS + """
local h, z = KEYS[1], KEYS[2]
local limit, rpd, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local horizon, ttl, reset_h = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local conc_retry, rand, state_ttl = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local rate, lim = num(redis.call('HGET', h, 'rate'), 0), num(redis.call('HGET', h, 'limit'), 0)
if rate <= 0 then
  rate, lim = limit, limit
  redis.call('HSET', h, 'rate', rate, 'limit', lim, 't_up', now)
elseif lim ~= limit then
  lim = limit
  if rate > limit then rate = limit end
  redis.call('HSET', h, 'rate', rate, 'limit', lim)
end
redis.call('EXPIRE', h, state_ttl)
local park = num(redis.call('HGET', h, 'park'), 0)
if park > now then return {0, tostring(park - now), 'parked'} end
local cool = num(redis.call('HGET', h, 'cool'), 0)
if cool > now then return {0, tostring(cool - now), 'cooldown'} end
local day = math.floor((now - reset_h * 3600) / 86400)
local count = num(redis.call('HGET', h, 'count'), 0)
if num(redis.call('HGET', h, 'day'), -1) ~= day then
  count = 0
  redis.call('HSET', h, 'day', day, 'count', 0)
end
if count >= rpd then return {0, tostring((day + 1) * 86400 + reset_h * 3600 - now), 'daily'} end
redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
if redis.call('ZCARD', z) >= conc then return {0, tostring(conc_retry), 'concurrency'} end
local tat = num(redis.call('HGET', h, 'tat'), 0)
local slot = math.max(now, tat)
local wait = slot - now
if wait > horizon then return {0, tostring(wait - horizon), 'rate'} end
redis.call('HSET', h, 'tat', slot + 1.0 / rate)
redis.call('HINCRBY', h, 'count', 1)
local token = rand .. ':' .. string.format('%.6f', now)
redis.call('ZADD', z, slot + ttl, token)
redis.call('EXPIRE', z, math.ceil(ttl + horizon + 60))
return {1, tostring(wait), 'ok', token, tostring(slot)}
"""

FEEDBACK = _NOW + _HELPERS + """
local h = KEYS[1]
local kind, retry_after, booked = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local dec_factor, dec_window, meas_factor = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local meas_window, inc, probe = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local ceil_ttl, max_gap, min_frac = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local rate = num(redis.call('HGET', h, 'rate'), 0)
local lim = num(redis.call('HGET', h, 'limit'), 0)
local t_dec = num(redis.call('HGET', h, 't_dec'), 0)
if kind == '429' then
  if retry_after ~= nil and retry_after > 0 then
    local cool = num(redis.call('HGET', h, 'cool'), 0)
    redis.call('HSET', h, 'cool', math.max(cool, now + retry_after))
  end
  if rate <= 0 then return 0 end
  if booked ~= nil then
    if booked < t_dec then return 0 end
  elseif now - t_dec < dec_window then
    return 0
  end
  local m = measured(h, now, meas_window)
  local new = rate * dec_factor
  if m > 0 then new = math.min(new, m * meas_factor) end
  redis.call('HSET', h, 'ceiling', rate, 'rate', math.max(new, lim * min_frac), 't_dec', now, 't_up', now)
  return 1
end
roll(h, now, meas_window)
redis.call('HINCRBY', h, 'win_cur', 1)
if rate <= 0 then return 0 end
local t_up = num(redis.call('HGET', h, 't_up'), now)
local gap = math.min(math.max(now - t_up, 0), max_gap)
local ceiling = num(redis.call('HGET', h, 'ceiling'), 0)
if ceiling > 0 and now - t_dec > ceil_ttl then
  ceiling = 0
  redis.call('HSET', h, 'ceiling', 0)
end
local step = inc * lim * gap
if ceiling > 0 and rate >= ceiling then step = step * probe end
redis.call('HSET', h, 'rate', math.min(lim, rate + step), 't_up', now)
return 1
"""

SNAPSHOT = _NOW + """
local h, z = KEYS[1], KEYS[2]
local v = redis.call('HMGET', h, 'rate', 'park', 'park_reason', 'cool', 'ceiling', 't_dec', 'day', 'count')
local live = redis.call('ZCOUNT', z, '(' .. now, '+inf')
return {tostring(now), v[1] or '', v[2] or '', v[3] or '', v[4] or '', v[5] or '', v[6] or '', v[7] or '',
        v[8] or '', live}
"""

PARK = """
redis.call('HSET', KEYS[1], 'park', ARGV[1], 'park_reason', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


def _f(v: Any, default: float = 0.0) -> float:
    try:
        return float(v.decode() if isinstance(v, bytes) else v)
    except (TypeError, ValueError):
        return default


class RedisGate:
    """`Gate` shared through Redis. The client is injected; nothing touches Redis until the first call."""

    def __init__(self, client: redis.Redis[Any], prefix: str = "gate", policy: AdaptivePolicy | None = None) -> None:
        self._r = client
        self._prefix = prefix
        self._policy = policy or AdaptivePolicy()
        self._scripts: dict[str, Any] = {}

    def _script(self, name: str, body: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self._r.register_script(body)
        return self._scripts[name]

    def _keys(self, key: str) -> list[str]:
        h = f"{self._prefix}:{key}"
        return [h, f"{h}:inflight"]

    def acquire(self, key: str, limits: GateLimits) -> Admission:
        import uuid

        res = self._script("acquire", ACQUIRE)(keys=self._keys(key), args=[
            repr(limits.rate_per_s), limits.effective_rpd, limits.concurrency, repr(limits.horizon_s),
            repr(limits.inflight_ttl_s), limits.day_reset_hour_utc, repr(self._policy.concurrency_retry_s),
            uuid.uuid4().hex, STATE_TTL_S,
        ])
        admitted = int(res[0]) == 1
        reason = Reason(res[2].decode() if isinstance(res[2], bytes) else res[2])
        if not admitted:
            return Admission(False, 0.0, max(_f(res[1]), 0.0), reason, None)
        token = res[3].decode() if isinstance(res[3], bytes) else str(res[3])
        return Admission(True, max(_f(res[1]), 0.0), 0.0, Reason.OK, token, _f(res[4]))

    def release(self, key: str, token: str) -> None:
        self._r.zrem(self._keys(key)[1], token)

    def feedback(self, key: str, *, ok: bool, rate_limited: bool, retry_after_s: float | None,
                 token: str | None = None) -> None:
        if not ok and not rate_limited:
            return
        p = self._policy
        booked = booked_at(token)
        self._script("feedback", FEEDBACK)(keys=self._keys(key)[:1], args=[
            "429" if rate_limited else "ok", "" if retry_after_s is None else repr(retry_after_s),
            "" if booked is None else repr(booked), p.decrease_factor, p.decrease_window_s, p.measured_factor,
            p.measure_window_s, p.increase_per_s, p.probe_fraction, p.ceiling_ttl_s, p.max_clean_gap_s,
            p.min_fraction,
        ])

    def park(self, key: str, until_epoch_s: float, reason: str) -> None:
        self._script("park", PARK)(keys=self._keys(key)[:1], args=[repr(until_epoch_s), reason, STATE_TTL_S])

    def snapshot(self, key: str, limits: GateLimits) -> GateSnapshot:
        from pipeline.gate.base import day_index

        res = self._script("snapshot", SNAPSHOT)(keys=self._keys(key), args=[])
        now = _f(res[0])
        limit = limits.rate_per_s
        rate = _f(res[1])
        rate = min(rate, limit) if rate > 0 else limit
        park, cool, ceiling, t_dec = _f(res[2]), _f(res[4]), _f(res[5]), _f(res[6])
        reason = res[3].decode() if isinstance(res[3], bytes) else str(res[3] or "")
        today = int(_f(res[8])) if int(_f(res[7], -1)) == day_index(now, limits.day_reset_hour_utc) else 0
        remembered = ceiling > 0 and now - t_dec <= self._policy.ceiling_ttl_s
        return GateSnapshot(
            rate_per_min=rate * 60.0, limit_per_min=limit * 60.0, in_flight=int(res[9]),
            concurrency=limits.concurrency, today=today, daily_limit=limits.effective_rpd,
            parked_until=park if park > now else None, park_reason=reason if park > now else None,
            cooldown_until=cool if cool > now else None,
            ceiling_per_min=ceiling * 60.0 if remembered else None, now_s=now,
        )
