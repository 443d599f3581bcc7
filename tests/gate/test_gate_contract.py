"""One contract for both admission gates: the Redis one (shared, Redis' clock) and the in-process one."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from pipeline.gate.base import GateLimits, Reason
from pipeline.gate.local import LocalGate


@pytest.fixture(params=["redis", "local"])
def gate(request: pytest.FixtureRequest) -> Iterator[object]:
    if request.param == "local":
        yield LocalGate()
        return
    import redis

    from pipeline.gate.redis import RedisGate

    url = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    yield RedisGate(client, prefix=f"test-gate-{uuid.uuid4().hex[:8]}")
    client.close()


def limits(**kw: object) -> GateLimits:
    base: dict[str, object] = {"rpm": 600, "rpd": 100_000, "concurrency": 1000, "headroom": Decimal("0"),
                               "horizon_s": 1.0}
    base.update(kw)
    return GateLimits(**base)  # type: ignore[arg-type]


def test_slots_are_spaced_and_the_horizon_holds(gate) -> None:  # type: ignore[no-untyped-def]
    lim = limits()  # 10 requests/s
    answers = [gate.acquire("p", lim) for _ in range(40)]
    admitted = [a for a in answers if a.admitted]
    refused = [a for a in answers if not a.admitted]
    # slots from now to now + 1 s at 0.1 s spacing: about 11, never more than 12 (timing of the calls)
    assert 10 <= len(admitted) <= 12
    slots = sorted(a.slot_at_s for a in admitted)
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) == pytest.approx(0.1, abs=0.002)
    assert all(a.wait_s <= lim.horizon_s + 1e-6 for a in admitted)
    assert all(r.reason == Reason.RATE and r.retry_after_s > 0 for r in refused)


def test_headroom_lowers_the_rate(gate) -> None:  # type: ignore[no-untyped-def]
    lim = limits(rpm=600, headroom=Decimal("0.5"))  # 5/s
    admitted = [a for a in (gate.acquire("h", lim) for _ in range(30)) if a.admitted]
    slots = sorted(a.slot_at_s for a in admitted)
    assert slots[1] - slots[0] == pytest.approx(0.2, abs=0.002)


def test_concurrency_cap_and_release(gate) -> None:  # type: ignore[no-untyped-def]
    lim = limits(rpm=60_000, concurrency=2)
    a, b, c = (gate.acquire("c", lim) for _ in range(3))
    assert a.admitted and b.admitted and not c.admitted and c.reason == Reason.CONCURRENCY
    gate.release("c", a.token)
    gate.release("c", a.token)  # idempotent
    assert gate.acquire("c", lim).admitted


def test_inflight_slots_of_crashed_callers_expire(gate) -> None:  # type: ignore[no-untyped-def]
    lim = limits(rpm=60_000, concurrency=1, inflight_ttl_s=0.3)
    assert gate.acquire("t", lim).admitted
    assert not gate.acquire("t", lim).admitted
    time.sleep(0.4)
    assert gate.acquire("t", lim).admitted


def test_daily_limit(gate) -> None:  # type: ignore[no-untyped-def]
    lim = limits(rpm=60_000, rpd=3)
    got = [gate.acquire("d", lim) for _ in range(4)]
    assert [g.admitted for g in got] == [True, True, True, False]
    assert got[3].reason == Reason.DAILY and 0 < got[3].retry_after_s <= 86_400
    assert gate.snapshot("d", lim).today == 3


def test_park(gate) -> None:  # type: ignore[no-untyped-def]
    lim = limits()
    gate.park("k", time.time() + 60, "daily_quota")
    a = gate.acquire("k", lim)
    assert not a.admitted and a.reason == Reason.PARKED and 55 < a.retry_after_s <= 60.5
    snap = gate.snapshot("k", lim)
    assert snap.parked_until is not None and snap.park_reason == "daily_quota"
    gate.park("k", 0, "")
    assert gate.acquire("k", lim).admitted


def test_429_cuts_the_rate_and_honours_the_delay(gate) -> None:  # type: ignore[no-untyped-def]
    lim = limits()
    first = gate.acquire("r", lim)
    assert first.admitted
    gate.feedback("r", ok=False, rate_limited=True, retry_after_s=0.5, token=first.token)
    snap = gate.snapshot("r", lim)
    assert snap.rate_per_min < snap.limit_per_min * 0.75
    refused = gate.acquire("r", lim)
    assert not refused.admitted and refused.reason == Reason.COOLDOWN
    # a second 429 from the same overshoot (booked before the cut) does not cut again
    rate = snap.rate_per_min
    gate.feedback("r", ok=False, rate_limited=True, retry_after_s=None, token=first.token)
    assert gate.snapshot("r", lim).rate_per_min == pytest.approx(rate)
    time.sleep(0.55)
    assert gate.acquire("r", lim).admitted


def test_clean_answers_raise_the_rate_back(gate) -> None:  # type: ignore[no-untyped-def]
    lim = limits()
    a = gate.acquire("u", lim)
    gate.feedback("u", ok=False, rate_limited=True, retry_after_s=None, token=a.token)
    low = gate.snapshot("u", lim).rate_per_min
    for _ in range(6):
        time.sleep(0.2)
        gate.feedback("u", ok=True, rate_limited=False, retry_after_s=None)
    assert gate.snapshot("u", lim).rate_per_min > low


def test_other_failures_change_nothing(gate) -> None:  # type: ignore[no-untyped-def]
    lim = limits()
    gate.acquire("o", lim)
    before = gate.snapshot("o", lim).rate_per_min
    gate.feedback("o", ok=False, rate_limited=False, retry_after_s=None)
    assert gate.snapshot("o", lim).rate_per_min == before
