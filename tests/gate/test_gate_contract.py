"""One contract for both admission gates: the Redis one (shared, Redis' clock) and the in-process one.

Rates are measured with the slot times the gate hands out, not with sleeps. On the fake clock of the local
gate every number is exact; on Redis time passes between calls, so bounds there allow a few milliseconds.
"""

from __future__ import annotations

import itertools
import threading
from decimal import Decimal
from typing import Any

import pytest

from pipeline.gate.base import AdaptivePolicy, Admission, GateLimits, Reason, next_day_start
from tests.gate.conftest import Env


def limits(**kw: Any) -> GateLimits:
    base: dict[str, Any] = {"rpm": 600, "rpd": 100_000, "concurrency": 1000, "headroom": Decimal("0"),
                            "horizon_s": 1.0}
    base.update(kw)
    return GateLimits(**base)


def drain(gate: Any, key: str, lim: GateLimits) -> tuple[list[Admission], Admission]:
    """Acquire until refused: the slots admitted, and the refusal."""
    got: list[Admission] = []
    while True:
        a = gate.acquire(key, lim)
        if not a.admitted:
            return got, a
        got.append(a)


def spacing(admitted: list[Admission]) -> list[float]:
    slots = sorted(a.slot_at_s for a in admitted)
    return [b - a for a, b in itertools.pairwise(slots)]


def rate_per_min(gate: Any, key: str, lim: GateLimits) -> float:
    return float(gate.snapshot(key, lim).rate_per_min)


# --- rate, horizon, headroom -------------------------------------------------------------------------------


def test_each_caller_gets_its_own_slot_within_the_horizon(gate: Any) -> None:
    lim = limits()  # 10/s, horizon 1 s
    admitted, refused = drain(gate, "p", lim)
    assert 10 <= len(admitted) <= 12  # slots now, +0.1 s, ... +1.0 s
    assert min(spacing(admitted)) == pytest.approx(0.1, abs=1e-3)
    assert len({a.slot_at_s for a in admitted}) == len(admitted)
    assert all(0 <= a.wait_s <= lim.horizon_s + 1e-6 for a in admitted)
    assert all(a.token for a in admitted) and len({a.token for a in admitted}) == len(admitted)
    assert refused.reason == Reason.RATE and refused.token is None and refused.wait_s == 0
    # it took nothing: the next slot is at most one interval past the horizon
    assert 0 <= refused.retry_after_s <= 0.1 + 1e-3


def test_a_refused_caller_returning_after_retry_after_is_admitted(env: Env, gate: Any) -> None:
    lim = limits(rpm=120)  # 2/s: slots 0.5 s apart
    _, refused = drain(gate, "r", lim)
    assert refused.reason == Reason.RATE
    env.advance(refused.retry_after_s + 0.01)
    again = gate.acquire("r", lim)
    assert again.admitted and again.wait_s <= lim.horizon_s


def test_the_rate_holds_in_every_one_second_window(env: Env, gate: Any) -> None:
    lim = limits(rpm=1200, headroom=Decimal("0.03"))  # 19.4/s
    slots: list[float] = []
    end = env.now() + 2.0
    while env.now() < end:
        admitted, refused = drain(gate, "w", lim)
        slots += [a.slot_at_s for a in admitted]
        env.advance(max(refused.retry_after_s, 0.01))
    slots.sort()
    worst = max(sum(1 for t in slots[i:] if t < s + 1.0) for i, s in enumerate(slots))
    assert worst <= 19.4 + 1  # + 1: a window that starts on a slot also holds the one 1 s later
    assert min(spacing([Admission(True, 0, 0, Reason.OK, "x", s) for s in slots])) >= 1 / 19.4 - 1e-6
    span = slots[-1] - slots[0]
    assert (len(slots) - 1) / span == pytest.approx(19.4, rel=0.01)


def test_headroom_lowers_rate_and_daily_count() -> None:
    lim = GateLimits(rpm=10, rpd=1000, concurrency=4, headroom=Decimal("0.03"))
    assert lim.rate_per_s == pytest.approx(9.7 / 60)  # not floored to 9/min
    assert lim.effective_rpd == 970
    assert GateLimits(rpm=1, rpd=1, concurrency=1, headroom=Decimal("0.5")).effective_rpd == 1
    assert GateLimits(rpm=1, rpd=1, concurrency=1, headroom=Decimal("0.5")).rate_per_s == pytest.approx(1 / 60)
    with pytest.raises(ValueError):
        GateLimits(rpm=0, rpd=1, concurrency=1)
    with pytest.raises(ValueError):
        GateLimits(rpm=1, rpd=1, concurrency=1, headroom=Decimal(1))


def test_headroom_spaces_the_slots(gate: Any) -> None:
    admitted, _ = drain(gate, "h", limits(rpm=600, headroom=Decimal("0.5")))  # 5/s
    assert min(spacing(admitted)) == pytest.approx(0.2, abs=1e-3)


def test_concurrent_callers_never_share_a_slot(gate: Any) -> None:
    lim = limits()
    results: list[Admission] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(10):
            a = gate.acquire("t", lim)
            with lock:
                results.append(a)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admitted = [a for a in results if a.admitted]
    assert 10 <= len(admitted) <= 12
    assert min(spacing(admitted)) >= 0.1 - 1e-3


# --- in flight ----------------------------------------------------------------------------------------------


def test_concurrency_cap_and_release(gate: Any) -> None:
    lim = limits(rpm=60_000, concurrency=2)
    a, b, c = (gate.acquire("c", lim) for _ in range(3))
    assert a.admitted and b.admitted
    assert not c.admitted and c.reason == Reason.CONCURRENCY and c.retry_after_s > 0
    assert gate.snapshot("c", lim).in_flight == 2
    gate.release("c", a.token)
    gate.release("c", a.token)  # idempotent
    gate.release("c", "not-a-token")  # unknown: no-op
    assert gate.snapshot("c", lim).in_flight == 1
    assert gate.acquire("c", lim).admitted
    assert not gate.acquire("c", lim).admitted


def test_in_flight_slots_of_crashed_callers_expire(env: Env, gate: Any) -> None:
    lim = limits(rpm=60_000, concurrency=1, inflight_ttl_s=0.3)
    assert gate.acquire("x", lim).admitted  # never released
    assert gate.acquire("x", lim).reason == Reason.CONCURRENCY
    env.advance(0.35)
    assert gate.snapshot("x", lim).in_flight == 0
    assert gate.acquire("x", lim).admitted


# --- per day ------------------------------------------------------------------------------------------------


def test_daily_cap_and_reset(env: Env, gate: Any) -> None:
    lim = limits(rpm=60_000, rpd=3, day_reset_hour_utc=8)
    got = [gate.acquire("d", lim) for _ in range(4)]
    assert [g.admitted for g in got] == [True, True, True, False]
    assert got[3].reason == Reason.DAILY
    now = env.now()
    assert got[3].retry_after_s == pytest.approx(next_day_start(now, 8) - now, abs=1.0)
    snap = gate.snapshot("d", lim)
    assert (snap.today, snap.daily_limit) == (3, 3)
    env.next_day(gate, "d")
    assert gate.acquire("d", lim).admitted
    assert gate.snapshot("d", lim).today == 1


def test_daily_cap_keeps_headroom(gate: Any) -> None:
    lim = limits(rpm=60_000, rpd=100, headroom=Decimal("0.03"))
    got = [gate.acquire("dh", lim) for _ in range(100)]
    assert sum(a.admitted for a in got) == 97


# --- park, cooldown -----------------------------------------------------------------------------------------


def test_park_refuses_until_then(env: Env, gate: Any) -> None:
    lim = limits()
    until = env.now() + 60
    gate.park("k", until, "daily_quota")
    a = gate.acquire("k", lim)
    assert not a.admitted and a.reason == Reason.PARKED
    assert a.retry_after_s == pytest.approx(60, abs=0.5)
    snap = gate.snapshot("k", lim)
    assert snap.parked_until == pytest.approx(until) and snap.park_reason == "daily_quota"
    gate.park("k", 0, "")  # lifted
    assert gate.acquire("k", lim).admitted
    assert gate.snapshot("k", lim).parked_until is None


def test_a_park_in_the_past_is_no_park(env: Env, gate: Any) -> None:
    gate.park("kp", env.now() - 1, "daily_quota")
    assert gate.acquire("kp", limits()).admitted


def test_the_providers_retry_after_is_honoured(env: Env, gate: Any) -> None:
    lim = limits()
    first = gate.acquire("ra", lim)
    gate.feedback("ra", ok=False, rate_limited=True, retry_after_s=0.3, token=first.token)
    refused = gate.acquire("ra", lim)
    assert not refused.admitted and refused.reason == Reason.COOLDOWN
    assert 0.25 < refused.retry_after_s <= 0.3
    assert gate.snapshot("ra", lim).cooldown_until is not None
    gate.feedback("ra", ok=False, rate_limited=True, retry_after_s=0.05, token=None)  # never shortens it
    assert gate.acquire("ra", lim).reason == Reason.COOLDOWN
    env.advance(0.35)
    assert gate.acquire("ra", lim).admitted
    assert gate.snapshot("ra", lim).cooldown_until is None


# --- adaptive rate ------------------------------------------------------------------------------------------


def test_a_429_cuts_the_rate_and_the_cut_takes_effect_at_once(env: Env, gate: Any) -> None:
    lim = limits()  # 600/min
    admitted, _ = drain(gate, "a", lim)
    gate.feedback("a", ok=False, rate_limited=True, retry_after_s=None, token=admitted[0].token)
    snap = gate.snapshot("a", lim)
    assert snap.rate_per_min == pytest.approx(420)  # x0.7: nothing measured yet
    assert snap.ceiling_per_min == pytest.approx(540)  # a quick climb back to 0.9 x the rate that was too high
    env.advance(1.2)  # the slots booked before the cut are past; nothing is booked at the old rate
    after, _ = drain(gate, "a", lim)
    assert min(spacing(after)) == pytest.approx(60 / 420, abs=1e-3)


def test_one_overshoot_cuts_once(env: Env, gate: Any) -> None:
    lim = limits()
    before_cut, _ = drain(gate, "o", lim)
    for a in before_cut:  # the whole burst of 429s booked before the cut
        gate.feedback("o", ok=False, rate_limited=True, retry_after_s=None, token=a.token)
    assert rate_per_min(gate, "o", lim) == pytest.approx(420)
    env.advance(1.2)
    after_cut = gate.acquire("o", lim)
    gate.feedback("o", ok=False, rate_limited=True, retry_after_s=None, token=after_cut.token)  # still too fast
    assert rate_per_min(gate, "o", lim) == pytest.approx(294)


def test_without_a_token_429s_within_the_window_count_once(env: Env) -> None:
    gate = env.make(AdaptivePolicy(decrease_window_s=0.2))
    lim = limits()
    gate.acquire("n", lim)
    for _ in range(5):
        gate.feedback("n", ok=False, rate_limited=True, retry_after_s=None)
    assert rate_per_min(gate, "n", lim) == pytest.approx(420)
    env.advance(0.25)
    gate.feedback("n", ok=False, rate_limited=True, retry_after_s=None)
    assert rate_per_min(gate, "n", lim) == pytest.approx(294)


@pytest.mark.parametrize(("answers_per_s", "expected_per_min"), [
    (8, 0.97 * 8 * 60),  # the measured rate, a little under
    (2, 300),  # never more than halved by one cut
    (16, 540),  # always at least 10% lower
])
def test_a_cut_goes_to_the_measured_rate_of_clean_answers(env: Env, answers_per_s: int,
                                                         expected_per_min: float) -> None:
    gate = env.make(AdaptivePolicy(measure_window_s=0.5))
    lim = limits()
    gate.acquire("m", lim)
    for _ in range(answers_per_s):  # one second of clean answers
        gate.feedback("m", ok=True, rate_limited=False, retry_after_s=None)
        env.advance(1 / answers_per_s)
    rate_before = rate_per_min(gate, "m", lim)
    gate.feedback("m", ok=False, rate_limited=True, retry_after_s=None)
    expected = min(expected_per_min, 0.9 * rate_before)
    assert rate_per_min(gate, "m", lim) == pytest.approx(expected, rel=0.01 if env.kind == "local" else 0.12)


def test_clean_answers_raise_the_rate_additively(env: Env) -> None:
    gate = env.make(AdaptivePolicy(increase_per_s=0.5, probe_s=0.0))
    lim = limits()
    gate.acquire("u", lim)
    gate.feedback("u", ok=False, rate_limited=True, retry_after_s=None)
    assert rate_per_min(gate, "u", lim) == pytest.approx(420)
    for _ in range(4):  # 0.4 s of clean answers at +50% of the limit per second: +120/min
        env.advance(0.1)
        gate.feedback("u", ok=True, rate_limited=False, retry_after_s=None)
    assert rate_per_min(gate, "u", lim) == pytest.approx(540, abs=0.5 if env.kind == "local" else 15)
    for _ in range(5):
        env.advance(0.1)
        gate.feedback("u", ok=True, rate_limited=False, retry_after_s=None)
    assert rate_per_min(gate, "u", lim) == pytest.approx(600)  # never above the limit


def test_after_a_blind_cut_the_climb_is_quick_then_a_slow_probe(env: Env) -> None:
    gate = env.make(AdaptivePolicy(increase_per_s=0.5, probe_fraction=0.1, probe_s=60.0))
    lim = limits()
    gate.acquire("s", lim)
    gate.feedback("s", ok=False, rate_limited=True, retry_after_s=None)  # 420, probing above 540
    for _ in range(4):  # +30 each (and a hair: floating point must not leave it a hair under 540)
        env.advance(0.1 + 1e-6)
        gate.feedback("s", ok=True, rate_limited=False, retry_after_s=None)
    assert rate_per_min(gate, "s", lim) == pytest.approx(540, abs=0.5 if env.kind == "local" else 8)
    for _ in range(4):  # +3 each
        env.advance(0.1)
        gate.feedback("s", ok=True, rate_limited=False, retry_after_s=None)
    assert rate_per_min(gate, "s", lim) == pytest.approx(552, abs=0.5 if env.kind == "local" else 8)


def test_after_a_measured_cut_the_climb_is_a_slow_probe(env: Env) -> None:
    gate = env.make(AdaptivePolicy(measure_window_s=0.5, increase_per_s=0.5, probe_fraction=0.1))
    lim = limits()
    gate.acquire("sm", lim)
    for _ in range(8):
        gate.feedback("sm", ok=True, rate_limited=False, retry_after_s=None)
        env.advance(1 / 8)
    gate.feedback("sm", ok=False, rate_limited=True, retry_after_s=None)
    cut = rate_per_min(gate, "sm", lim)
    assert gate.snapshot("sm", lim).ceiling_per_min == pytest.approx(cut)
    for _ in range(4):  # +3 each, not +30
        env.advance(0.1)
        gate.feedback("sm", ok=True, rate_limited=False, retry_after_s=None)
    assert rate_per_min(gate, "sm", lim) == pytest.approx(cut + 12, abs=0.5 if env.kind == "local" else 3)


def test_a_silence_counts_as_little_clean_time(env: Env) -> None:
    gate = env.make(AdaptivePolicy(increase_per_s=0.5, probe_s=0.0, max_clean_gap_s=0.1))
    lim = limits()
    gate.acquire("g", lim)
    gate.feedback("g", ok=False, rate_limited=True, retry_after_s=None)
    env.advance(0.4)
    gate.feedback("g", ok=True, rate_limited=False, retry_after_s=None)
    assert rate_per_min(gate, "g", lim) == pytest.approx(450)  # +0.1 s worth, not +0.4 s


def test_the_rate_has_a_floor(env: Env) -> None:
    gate = env.make(AdaptivePolicy(decrease_window_s=0.0))
    lim = limits()
    gate.acquire("f", lim)
    for _ in range(20):
        gate.feedback("f", ok=False, rate_limited=True, retry_after_s=None)
    assert rate_per_min(gate, "f", lim) == pytest.approx(600 * 0.02)


def test_other_failures_change_nothing(gate: Any) -> None:
    lim = limits()
    gate.acquire("e", lim)
    before = gate.snapshot("e", lim)
    gate.feedback("e", ok=False, rate_limited=False, retry_after_s=30.0)
    after = gate.snapshot("e", lim)
    assert after.rate_per_min == before.rate_per_min and after.cooldown_until is None
    assert gate.acquire("e", lim).admitted


def test_a_changed_limit_caps_the_live_rate(gate: Any) -> None:
    gate.acquire("l", limits(rpm=600))
    gate.feedback("l", ok=False, rate_limited=True, retry_after_s=None)  # 420
    gate.acquire("l", limits(rpm=300))
    assert rate_per_min(gate, "l", limits(rpm=300)) == pytest.approx(300)
    gate.acquire("l", limits(rpm=1200))  # a higher limit is climbed to, not jumped to
    assert rate_per_min(gate, "l", limits(rpm=1200)) == pytest.approx(300)


def test_snapshot_of_an_unused_key(gate: Any) -> None:
    snap = gate.snapshot("never", limits())
    assert (snap.rate_per_min, snap.limit_per_min) == (pytest.approx(600), pytest.approx(600))
    assert (snap.in_flight, snap.today, snap.daily_limit) == (0, 0, 100_000)
    assert snap.parked_until is None and snap.cooldown_until is None and snap.ceiling_per_min is None


def test_keys_are_independent_and_clear_forgets(gate: Any) -> None:
    lim = limits(rpm=60_000, concurrency=1)
    assert gate.acquire("one", lim).admitted
    assert gate.acquire("two", lim).admitted
    gate.clear("one")
    assert gate.acquire("one", lim).admitted
