"""The shared gate: every worker on every host, one Redis, one clock (Redis' `TIME`).

Each step is one Lua script (gate/lua.py, the algorithm of gate/local.py), so rate, daily count and
in-flight slots are checked and taken atomically. Keys per gate key K (a provider): `{prefix}:{K}:s`, the
state hash, `{prefix}:{K}:f`, the in-flight tokens scored by expiry, and `{prefix}:{K}:w`, the slots handed out
under a windowed limit (the braces put all three in one Redis Cluster hash slot). State has no TTL: a few
small keys per provider, and a provider's learnt rate outlives idle nights.

    gate = RedisGate(redis.Redis.from_url(settings.redis_url))   # composition root; no I/O here
    admission = gate.acquire("google", GateLimits.from_provider(cfg))
"""

from __future__ import annotations

import uuid
from typing import Any

import redis
from redis.commands.core import Script

from pipeline.gate import lua
from pipeline.gate.base import (
    AdaptivePolicy,
    Admission,
    GateLimits,
    GateSnapshot,
    Reason,
    booked_at,
    day_index,
)


class RedisGate:
    """`Gate` over Redis. Scripts are registered on first use; the constructor does no I/O."""

    def __init__(
        self, client: redis.Redis[Any], prefix: str = "gate", policy: AdaptivePolicy | None = None
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._policy = policy or AdaptivePolicy()
        self._scripts: dict[str, Script] = {}

    def _run(self, name: str, key: str, args: list[Any]) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(getattr(lua, name))
        return script(keys=self._keys(key), args=args)

    def _keys(self, key: str) -> list[str]:
        return [f"{self._prefix}:{{{key}}}:s", f"{self._prefix}:{{{key}}}:f", f"{self._prefix}:{{{key}}}:w"]

    def acquire(self, key: str, limits: GateLimits) -> Admission:
        args = [
            repr(limits.rate_per_s),
            limits.effective_rpd,
            limits.concurrency,
            repr(limits.horizon_s),
            repr(limits.inflight_ttl_s),
            limits.day_reset_hour_utc,
            repr(self._policy.concurrency_retry_s),
            uuid.uuid4().hex,
            repr(float(limits.window_s or 0.0)),
        ]
        admitted, wait, retry, reason, slot, token = (_text(v) for v in self._run("ACQUIRE", key, args))
        if admitted == "1":
            return Admission(True, max(float(wait), 0.0), 0.0, Reason.OK, token, float(slot))
        return Admission(False, 0.0, float(retry), Reason(reason), None)

    def release(self, key: str, token: str) -> None:
        self._client.zrem(self._keys(key)[1], token)

    def feedback(
        self, key: str, *, ok: bool, rate_limited: bool, retry_after_s: float | None, token: str | None = None
    ) -> None:
        if not (ok or rate_limited):
            return
        p = self._policy
        booked = booked_at(token)
        numbers = (p.decrease_window_s, p.measured_factor, p.deepest_cut, p.shallowest_cut, p.decrease_factor,
                   p.measure_window_s, p.increase_per_s, p.probe_fraction, p.probe_s, p.max_clean_gap_s,
                   p.min_fraction)
        args = [
            "429" if rate_limited else "ok",
            "" if retry_after_s is None else repr(float(retry_after_s)),
            "" if booked is None else repr(booked),
            *(repr(float(v)) for v in numbers),
        ]
        self._run("FEEDBACK", key, args)

    def park(self, key: str, until_epoch_s: float, reason: str) -> None:
        self._client.hset(self._keys(key)[0], mapping={"park": repr(float(until_epoch_s)), "park_reason": reason})

    def snapshot(self, key: str, limits: GateLimits) -> GateSnapshot:
        raw = [_text(v) for v in self._run("SNAPSHOT", key, [])]
        now, rate, park, cool, t_dec, ceiling = (float(raw[i]) for i in (0, 1, 5, 7, 8, 9))
        in_flight, day, count, park_reason = int(raw[2]), int(float(raw[3])), int(float(raw[4])), raw[6]
        limit = limits.rate_per_s
        parked = park > now
        probing = t_dec > 0 and now - t_dec < self._policy.probe_s
        return GateSnapshot(
            rate_per_min=(min(rate, limit) if rate > 0 else limit) * 60.0,
            limit_per_min=limit * 60.0,
            in_flight=in_flight,
            concurrency=limits.concurrency,
            today=count if day == day_index(now, limits.day_reset_hour_utc) else 0,
            daily_limit=limits.effective_rpd,
            parked_until=park if parked else None,
            park_reason=park_reason if parked else None,
            cooldown_until=cool if cool > now else None,
            ceiling_per_min=ceiling * 60.0 if probing else None,
            now_s=now,
        )

    def clear(self, key: str) -> None:
        """Forget everything about `key`: learnt rate, counts, park, in-flight slots."""
        self._client.delete(*self._keys(key))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
