"""Admission gate and backoff.

    base     GateLimits, AdaptivePolicy, Admission, GateSnapshot (the protocol: pipeline.core.ports.Gate)
    redis    RedisGate: shared by every worker through Redis, on Redis' clock (Lua scripts in lua.py)
    local    LocalGate: the in-process twin for the embedded mode, on an injectable clock
    backoff  exponential backoff with full jitter, capped

Import the implementation you need from its module; this package imports nothing (redis stays unloaded in
the embedded mode). A provider's circuit breaker is shared through the database: pipeline.core.providers_state.
"""
