"""The Redis gate's Lua scripts: the algorithm of gate/local.py, step for step, on Redis' clock (`TIME`).

KEYS[1] is the key's state hash (fields as in local._State), KEYS[2] its in-flight sorted set (token scored
by expiry), KEYS[3] the slots handed out under a windowed limit (token scored by slot time). Floats are stored
with %.17g (exact round trip) and returned as strings (Redis would truncate Lua numbers to integers).
"""

from __future__ import annotations

_PRELUDE = """
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function num(v, default)
  if v then return tonumber(v) end
  return default
end
local function fmt(x) return string.format('%.17g', x) end
"""

#: ARGV: limit (req/s), effective rpd, concurrency, horizon_s, inflight_ttl_s, day_reset_hour_utc,
#: concurrency_retry_s, a random id, window_s (0 = evenly spaced slots). Returns {admitted, wait_s,
#: retry_after_s, reason, slot_at_s, token}; the token is "<id>:<booking time>" (base.booked_at reads it back).
ACQUIRE = _PRELUDE + """
local limit = tonumber(ARGV[1])
local rpd = tonumber(ARGV[2])
local concurrency = tonumber(ARGV[3])
local horizon = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local reset_hour = tonumber(ARGV[6])
local conc_retry = tonumber(ARGV[7])
local window = tonumber(ARGV[9] or '0') or 0
local now = now_s()
local f = redis.call('HMGET', KEYS[1], 'tat', 'rate', 'limit', 'cool', 'park', 'day', 'count')
local tat, rate, lim = num(f[1], 0), num(f[2], 0), num(f[3], 0)
local cool, park, day, count = num(f[4], 0), num(f[5], 0), num(f[6], 0), num(f[7], 0)
if rate <= 0 then
  rate = limit
  redis.call('HSET', KEYS[1], 'rate', fmt(rate), 'limit', fmt(limit), 't_up', fmt(now))
elseif lim ~= limit then
  rate = math.min(rate, limit)
  redis.call('HSET', KEYS[1], 'rate', fmt(rate), 'limit', fmt(limit))
end
local function refused(reason, retry)
  return {0, '0', fmt(math.max(retry, 0)), reason, '0', ''}
end
if park > now then return refused('parked', park - now) end
if cool > now then return refused('cooldown', cool - now) end
local today = math.floor((now - reset_hour * 3600) / 86400)
if day ~= today then
  count = 0
  redis.call('HSET', KEYS[1], 'day', today, 'count', 0)
end
if count >= rpd then
  return refused('daily', (today + 1) * 86400 + reset_hour * 3600 - now)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now))
if redis.call('ZCARD', KEYS[2]) >= concurrency then return refused('concurrency', conc_retry) end
local slot = math.max(now, tat)
if window > 0 then
  -- local._window_slot: the first slot that keeps every window within the live rate's count
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now - window))
  local cap = math.max(math.floor(rate * window + 1e-9), 1)
  local n = redis.call('ZCARD', KEYS[3])
  slot = now
  if n >= cap then
    local oldest = redis.call('ZRANGE', KEYS[3], n - cap, n - cap, 'WITHSCORES')
    slot = math.max(now, tonumber(oldest[2]) + window)
  end
end
if slot - now > horizon then return refused('rate', slot - now - horizon) end
local token = ARGV[8] .. ':' .. string.format('%.6f', now)
if window > 0 then
  redis.call('HSET', KEYS[1], 'count', count + 1)
  redis.call('ZADD', KEYS[3], fmt(slot), token)
else
  redis.call('HSET', KEYS[1], 'tat', fmt(slot + 1 / rate), 'count', count + 1)
end
redis.call('ZADD', KEYS[2], fmt(slot + ttl), token)
return {1, fmt(slot - now), '0', 'ok', fmt(slot), token}
"""

#: ARGV: kind ("ok" | "429"), retry_after_s ("" = none), booked_at ("" = no token), then the AdaptivePolicy numbers:
#: decrease_window_s, measured_factor, deepest_cut, shallowest_cut, decrease_factor, measure_window_s,
#: increase_per_s, probe_fraction, probe_s, max_clean_gap_s, min_fraction.
FEEDBACK = _PRELUDE + """
local kind = ARGV[1]
local retry_after, booked = tonumber(ARGV[2]), tonumber(ARGV[3])
local p_window, p_measured, p_deepest, p_shallowest = tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6]), tonumber(ARGV[7])
local p_decrease, p_measure_window, p_increase = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local p_probe_fraction, p_probe_s, p_gap, p_min = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]),
  tonumber(ARGV[14])
local now = now_s()
local f = redis.call('HMGET', KEYS[1], 'rate', 'limit', 't_dec', 't_up', 'win_start', 'win_cur',
  'win_prev', 'cool', 'ceiling')
local rate, lim, t_dec, t_up = num(f[1], 0), num(f[2], 0), num(f[3], 0), num(f[4], 0)
local win_start, win_cur, win_prev, cool = num(f[5], 0), num(f[6], 0), num(f[7], -1), num(f[8], 0)
local ceiling = num(f[9], 0)

local function roll()
  if win_start <= 0 then
    win_start = now
  elseif now >= win_start + p_measure_window then
    local periods = math.floor((now - win_start) / p_measure_window)
    if periods == 1 then win_prev = win_cur else win_prev = 0 end
    win_cur = 0
    win_start = win_start + periods * p_measure_window
  end
end
local function measured()
  if win_start <= 0 then return 0 end
  roll()
  if win_prev < 0 then return 0 end
  local elapsed = math.max(now - win_start, 0)
  return (win_prev * (1 - math.min(elapsed / p_measure_window, 1)) + win_cur) / p_measure_window
end

if kind == '429' then
  if retry_after and retry_after > 0 and now + retry_after > cool then
    redis.call('HSET', KEYS[1], 'cool', fmt(now + retry_after))
  end
  if rate <= 0 then return 0 end
  if booked then
    if booked <= t_dec then return 0 end
  elseif now - t_dec < p_window then
    return 0
  end
  local m = measured()
  local new
  if m > 0 then
    new = math.min(math.max(m * p_measured, rate * p_deepest), rate * p_shallowest)
    ceiling = new
  else
    new = rate * p_decrease
    ceiling = rate * p_shallowest
  end
  rate, ceiling = math.max(new, lim * p_min), math.max(ceiling, lim * p_min)
  redis.call('HSET', KEYS[1], 'rate', fmt(rate), 'ceiling', fmt(ceiling), 't_dec', fmt(now), 't_up', fmt(now),
    'win_start', fmt(win_start), 'win_cur', win_cur, 'win_prev', win_prev)
  return 1
elseif kind == 'ok' then
  roll()
  win_cur = win_cur + 1
  if rate > 0 then
    local step = p_increase * lim * math.min(math.max(now - t_up, 0), p_gap)
    if rate >= ceiling and now - t_dec < p_probe_s then step = step * p_probe_fraction end
    rate = math.min(lim, rate + step)
    redis.call('HSET', KEYS[1], 'rate', fmt(rate), 't_up', fmt(now))
  end
  redis.call('HSET', KEYS[1], 'win_start', fmt(win_start), 'win_cur', win_cur, 'win_prev', win_prev)
  return 1
end
return 0
"""

#: Read-only. Returns {now, rate, in_flight, day, count, park, park_reason, cool, t_dec, ceiling}.
SNAPSHOT = _PRELUDE + """
local now = now_s()
local f = redis.call('HMGET', KEYS[1], 'rate', 'day', 'count', 'park', 'park_reason', 'cool', 't_dec', 'ceiling')
local in_flight = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now), '+inf')
return {fmt(now), f[1] or '0', in_flight, f[2] or '0', f[3] or '0', f[4] or '0', f[5] or '', f[6] or '0',
  f[7] or '0', f[8] or '0'}
"""
