"""The adaptive rate end to end, on the in-process gate and a fake clock (the Redis scripts are the same
algorithm; the contract suite holds them to it): a discrete-event simulation of the issue's benchmark, 96
callers, a provider that enforces its real limit as a token bucket of one second's worth and answers a 429 at
once with the bucket's delay (as the sandbox does), latency 0.5-2 s, refused callers back after a dispatch
delay. Default policy and limits, as the benchmark runs them."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest

from pipeline.gate.base import GateLimits
from pipeline.gate.local import LocalGate
from tests.gate.conftest import FakeClock


@dataclass
class Run:
    ok: int
    http_429: int
    utilization: float
    final_rate_per_min: float


def simulate(items: int, config_rpm: int, real_rpm: Callable[[float], float], seed: int,
             latency_s: tuple[float, float] = (0.5, 2.0), dispatch_s: float = 0.2) -> Run:
    rng = random.Random(seed)
    clock = FakeClock(0.0)
    gate = LocalGate(clock=clock)
    limits = GateLimits(rpm=config_rpm, rpd=10**9, concurrency=96, headroom=Decimal("0.03"))
    start = clock.now
    tokens, last = real_rpm(0) / 60, start
    events: list[tuple[float, int, str, int, str]] = []
    seq = 0

    def push(t: float, kind: str, item: int, token: str = "") -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, item, token))

    for i in range(items):
        push(start + rng.uniform(0, dispatch_s), "due", i)
    sent: list[float] = []
    ok = refused = 0
    while events:
        t, _, kind, item, token = heapq.heappop(events)
        clock.now = t
        if kind == "due":
            a = gate.acquire("p", limits)
            if a.admitted:
                push(t + a.wait_s, "send", item, a.token or "")
            else:
                push(t + a.retry_after_s + rng.uniform(0.01, dispatch_s), "due", item)
        elif kind == "send":
            rate = real_rpm(t - start) / 60
            tokens, last = min(rate, tokens + (t - last) * rate), t
            sent.append(t)
            if tokens >= 1:
                tokens -= 1
                push(t + rng.uniform(*latency_s), "ok", item, token)
            else:
                refused += 1
                gate.release("p", token)
                gate.feedback("p", ok=False, rate_limited=True, retry_after_s=(1 - tokens) / rate, token=token)
                push(t + rng.uniform(0.5, 1.5), "due", item)  # the item's backoff
        else:
            ok += 1
            gate.release("p", token)
            gate.feedback("p", ok=True, rate_limited=False, retry_after_s=None, token=token)
    span = sent[-1] - sent[0]
    real_mean = sum(real_rpm(sent[0] + span * k / 100) for k in range(100)) / 100
    return Run(ok, refused, ok / (span / 60) / real_mean, gate.snapshot("p", limits).rate_per_min)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_at_the_real_limit_no_429_and_full_use(seed: int) -> None:
    run = simulate(600, 600, lambda t: 600, seed)
    assert run.http_429 == 0
    assert run.utilization >= 0.96


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_hidden_limit_is_found_with_few_429s(seed: int) -> None:
    run = simulate(600, 600, lambda t: 360, seed)  # the real limit is 60% of the configured one
    assert run.ok == 600
    assert run.http_429 / (run.ok + run.http_429) <= 0.02
    assert run.utilization >= 0.90
    assert 0.85 * 360 <= run.final_rate_per_min <= 1.1 * 360


def test_the_rate_climbs_back_when_the_provider_recovers() -> None:
    # 60% for the first 40 s, then the full limit again: the gate finds its way back up
    run = simulate(900, 600, lambda t: 360 if t < 40 else 600, 1)
    assert run.final_rate_per_min >= 0.9 * 600 * 0.97
