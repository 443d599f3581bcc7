"""One contract for provider health, shared through Redis or in-process: rolling stats and the circuit."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pipeline.gate.health import CircuitState, HealthPolicy
from tests.gate.conftest import HealthEnv

POLICY = HealthPolicy(window=10, failure_threshold=3, error_rate_threshold=0.5, min_samples=6, cooldown_s=0.3,
                      probe_timeout_s=0.3)


def fail(h: Any, key: str, n: int = 1) -> None:
    for _ in range(n):
        h.record(key, ok=False, latency_s=1.0)


def test_rolling_success_rate_and_latency_percentiles(health_env: HealthEnv) -> None:
    h = health_env.make(POLICY)
    for i in range(1, 21):  # 20 clean answers, 0.1 s .. 2.0 s: the window keeps the last 10 (1.1 .. 2.0)
        h.record("p", ok=True, latency_s=i / 10)
    snap = h.snapshot("p")
    assert snap.state == CircuitState.CLOSED and snap.samples == 10 and snap.success_rate == 1.0
    assert snap.p50_s == pytest.approx(1.5) and snap.p95_s == pytest.approx(2.0)
    h.record("p", ok=False, latency_s=30.0)  # failures count against the rate, not in the latencies
    snap = h.snapshot("p")
    assert snap.success_rate == pytest.approx(0.9) and snap.p95_s == pytest.approx(2.0)
    assert snap.consecutive_failures == 1


def test_an_unknown_provider_is_healthy(health_env: HealthEnv) -> None:
    h = health_env.make(POLICY)
    assert h.allow("new").allowed
    snap = h.snapshot("new")
    assert snap.state == CircuitState.CLOSED and snap.samples == 0
    assert snap.success_rate is None and snap.p50_s is None and snap.opened_at is None


def test_consecutive_failures_open_the_circuit(health_env: HealthEnv) -> None:
    h = health_env.make(HealthPolicy(window=10, failure_threshold=3, error_rate_threshold=1.0, cooldown_s=0.3))
    h.record("c", ok=True, latency_s=1.0)
    fail(h, "c", 2)
    h.record("c", ok=True, latency_s=1.0)  # the run is broken
    fail(h, "c", 2)
    assert h.snapshot("c").state == CircuitState.CLOSED
    fail(h, "c")
    snap = h.snapshot("c")
    assert snap.state == CircuitState.OPEN and snap.consecutive_failures == 3
    assert snap.opened_at is not None and snap.retry_at == pytest.approx(snap.opened_at + 0.3)
    permit = h.allow("c")
    assert not permit.allowed and 0 < permit.retry_after_s <= 0.3


def test_an_error_rate_over_the_threshold_opens_the_circuit(health_env: HealthEnv) -> None:
    h = health_env.make(HealthPolicy(window=10, failure_threshold=100, error_rate_threshold=0.5, min_samples=6,
                                     cooldown_s=0.3))
    for _ in range(3):  # alternating: never two failures in a row, 50% errors: not over the threshold
        h.record("e", ok=True, latency_s=1.0)
        fail(h, "e")
    assert h.snapshot("e").state == CircuitState.CLOSED
    fail(h, "e")  # 4 of 7
    assert h.snapshot("e").state == CircuitState.OPEN


def test_too_few_samples_do_not_open_on_rate(health_env: HealthEnv) -> None:
    h = health_env.make(HealthPolicy(failure_threshold=100, min_samples=6))
    fail(h, "s", 2)
    assert h.snapshot("s").state == CircuitState.CLOSED


def test_half_open_probe_success_closes(health_env: HealthEnv) -> None:
    h = health_env.make(POLICY)
    fail(h, "h", 3)
    assert not h.allow("h").allowed
    health_env.advance(0.35)
    probe = h.allow("h")
    assert probe.allowed and probe.probe
    assert h.snapshot("h").state == CircuitState.HALF_OPEN
    other = h.allow("h")  # one probe at a time
    assert not other.allowed and other.retry_after_s > 0
    h.record("h", ok=True, latency_s=0.5)
    snap = h.snapshot("h")
    assert snap.state == CircuitState.CLOSED and snap.samples == 1 and snap.consecutive_failures == 0
    permit = h.allow("h")
    assert permit.allowed and not permit.probe


def test_half_open_probe_failure_reopens(health_env: HealthEnv) -> None:
    h = health_env.make(POLICY)
    fail(h, "r", 3)
    health_env.advance(0.35)
    assert h.allow("r").probe
    fail(h, "r")
    assert h.snapshot("r").state == CircuitState.OPEN
    assert not h.allow("r").allowed  # cooling down again
    health_env.advance(0.35)
    assert h.allow("r").probe


def test_a_lost_probe_is_replaced(health_env: HealthEnv) -> None:
    h = health_env.make(POLICY)
    fail(h, "l", 3)
    health_env.advance(0.35)
    assert h.allow("l").probe  # this caller crashes and never records
    assert not h.allow("l").allowed
    health_env.advance(0.35)
    assert h.allow("l").probe


def test_only_one_of_many_concurrent_callers_probes(health_env: HealthEnv) -> None:
    h = health_env.make(POLICY)
    fail(h, "m", 3)
    health_env.advance(0.35)
    permits: list[Any] = []
    lock = threading.Lock()

    def ask() -> None:
        p = h.allow("m")
        with lock:
            permits.append(p)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(p.allowed for p in permits) == 1


def test_reset_closes_and_forgets(health_env: HealthEnv) -> None:
    h = health_env.make(POLICY)
    fail(h, "x", 3)
    h.reset("x")
    snap = h.snapshot("x")
    assert snap.state == CircuitState.CLOSED and snap.samples == 0
    assert h.allow("x").allowed
