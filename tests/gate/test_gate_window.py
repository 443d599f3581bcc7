"""Windowed limits on both gates (Redis and in-process): "N requests per W seconds", as Kie.ai counts new tasks.

A window's count may be admitted at once; no window of W seconds ever holds more than that count; a 429's cut
lowers the count at once. Windows here are one second long so the Redis variant (real time) stays quick.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from pipeline.config import Limits, ProviderConfig
from pipeline.gate.base import Admission, GateLimits, Reason
from tests.gate.conftest import Env
from tests.gate.test_gate_contract import drain


def windowed(**kw: Any) -> GateLimits:
    base: dict[str, Any] = {"rpm": 600, "rpd": 100_000, "concurrency": 1000, "headroom": Decimal("0"),
                            "horizon_s": 0.2, "window_s": 1.0}
    base.update(kw)
    return GateLimits(**base)


def worst_window(slots: list[float], window_s: float) -> int:
    """The most slots in any half-open window of `window_s` seconds (each window starting on a slot is the worst)."""
    slots = sorted(slots)
    return max(sum(1 for t in slots[i:] if t < s + window_s - 1e-6) for i, s in enumerate(slots))


def test_a_windows_count_comes_at_once_then_waits_for_the_oldest(env: Env, gate: Any) -> None:
    lim = windowed()  # 10 per second
    assert lim.window_count == 10
    admitted, refused = drain(gate, "k", lim)
    assert len(admitted) == 10
    assert all(a.wait_s <= 0.05 for a in admitted)  # a burst: nobody is spread out over the window
    assert refused.reason == Reason.RATE and refused.token is None
    # the 11th fits when the first leaves the window: 1 s after it, less the horizon
    assert 0.7 <= refused.retry_after_s <= 0.8 + 1e-6
    env.advance(refused.retry_after_s + 0.02)
    again = gate.acquire("k", lim)
    assert again.admitted and again.wait_s <= lim.horizon_s
    assert again.slot_at_s >= min(a.slot_at_s for a in admitted) + 1.0 - 1e-6


def test_no_window_ever_holds_more_than_its_count(env: Env, gate: Any) -> None:
    lim = windowed(headroom=Decimal("0.03"))  # 9.7/s: 9 in any second
    assert lim.window_count == 9
    slots: list[float] = []
    end = env.now() + 2.5
    while env.now() < end:
        admitted, refused = drain(gate, "w", lim)
        slots += [a.slot_at_s for a in admitted]
        env.advance(max(refused.retry_after_s, 0.01))
    assert worst_window(slots, 1.0) == 9
    assert len(slots) >= 2 * 9  # and the windows are used: the count, not less, in each second


def test_a_cut_lowers_the_count_at_once(env: Env, gate: Any) -> None:
    lim = windowed()
    admitted, _ = drain(gate, "c", lim)
    assert len(admitted) == 10
    gate.feedback("c", ok=False, rate_limited=True, retry_after_s=None, token=admitted[0].token)  # blind x0.7
    env.advance(1.05)
    after, refused = drain(gate, "c", lim)
    assert len(after) == 7 and refused.reason == Reason.RATE
    assert worst_window([a.slot_at_s for a in admitted + after], 1.0) <= 10


def test_windowed_and_spaced_keys_live_side_by_side(gate: Any) -> None:
    burst, _ = drain(gate, "kie", windowed(rpm=120, window_s=10.0, horizon_s=0.5))  # 20 per 10 s
    spaced, _ = drain(gate, "google", windowed(rpm=120, window_s=None, horizon_s=0.5))  # one every 0.5 s
    assert len(burst) == 20
    assert 1 <= len(spaced) <= 2 and all(isinstance(a, Admission) for a in spaced)


def test_window_limits_from_config() -> None:
    cfg = ProviderConfig(name="kie", kind="gemini", limits=Limits(rpm=120, window_s=10))
    lim = GateLimits.from_provider(cfg)
    assert lim.window_s == 10 and lim.window_count == 19  # 3% headroom: 19.4 a window, whole requests only
    exact = GateLimits.from_provider(cfg.model_copy(update={"headroom": Decimal(0)}))
    assert exact.window_count == 20
    assert GateLimits.from_provider(ProviderConfig(name="g", kind="gemini")).window_s is None
    assert GateLimits(rpm=1, rpd=1, concurrency=1, window_s=1.0).window_count == 1  # never below one
    with pytest.raises(ValueError):
        GateLimits(rpm=1, rpd=1, concurrency=1, window_s=0)
    with pytest.raises(ValueError):
        Limits(rpm=1, window_s=-1)
