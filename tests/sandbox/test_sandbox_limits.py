"""Rate limits: the token bucket with a fake clock, and 429s over HTTP."""

from __future__ import annotations

import time

import httpx

from pipeline.sandbox.limits import DAY_S, Limiter
from tests.sandbox.sandbox_helpers import GENERATE, gemini_body


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_capacity_and_refill():
    clock = FakeClock()
    lim = Limiter(rpm=60, rpd=None, bucket_s=3.0, clock=clock)  # 1/s, 3 tokens
    assert [lim.admit().ok for _ in range(4)] == [True, True, True, False]
    refused = lim.admit()
    assert refused.quota == "rpm" and abs(refused.retry_after_s - 1.0) < 1e-9
    clock.now += 0.5
    assert abs(lim.admit().retry_after_s - 0.5) < 1e-9
    clock.now += 0.5
    assert lim.admit().ok


def test_default_bucket_is_a_minute_of_rate():
    lim = Limiter(rpm=30, rpd=None, bucket_s=60.0, clock=FakeClock())
    assert sum(lim.admit().ok for _ in range(40)) == 30


def test_rpd_and_day_rollover():
    clock = FakeClock()
    lim = Limiter(rpm=None, rpd=2, bucket_s=60.0, clock=clock)
    assert [lim.admit().ok for _ in range(3)] == [True, True, False]
    assert lim.admit().quota == "rpd"
    clock.now += DAY_S
    assert lim.admit().ok


def test_reset_refills():
    lim = Limiter(rpm=1, rpd=1, bucket_s=1.0, clock=FakeClock())
    assert lim.admit().ok and not lim.admit().ok
    lim.reset()
    assert lim.admit().ok


def _retry_delay_s(body) -> float:
    for d in body["error"]["details"]:
        if d["@type"].endswith("RetryInfo"):
            return float(d["retryDelay"].rstrip("s"))
    raise AssertionError("no RetryInfo")


def test_rpm_over_http_with_compressed_bucket(make_sandbox):
    sb = make_sandbox({"protocols": {"gemini": {"rpm": 120, "bucket_s": 1.0}}})  # 2/s, capacity 2
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        codes = [c.post(GENERATE, json=gemini_body(f"r{i}")).status_code for i in range(3)]
        assert codes == [200, 200, 429]
        refused = c.post(GENERATE, json=gemini_body("r-again"))
        assert refused.status_code == 429
        body = refused.json()
        delay = _retry_delay_s(body)
        assert 0 < delay <= 0.5
        quota = body["error"]["details"][0]["violations"][0]
        assert "PerMinute" in quota["quotaId"] and quota["quotaValue"] == "120"
        time.sleep(delay + 0.02)
        assert c.post(GENERATE, json=gemini_body("r-later")).status_code == 200
    ledger = sb.ledger()
    assert ledger["by_status"] == {"200": 3, "429": 2}
    sb.reset()
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        assert c.post(GENERATE, json=gemini_body("after reset")).status_code == 200


def test_rpd_over_http(make_sandbox):
    sb = make_sandbox({"protocols": {"gemini": {"rpd": 2}}})
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        codes = [c.post(GENERATE, json=gemini_body(f"d{i}")).status_code for i in range(3)]
        assert codes == [200, 200, 429]
        body = c.post(GENERATE, json=gemini_body("d")).json()
    quota = body["error"]["details"][0]["violations"][0]
    assert "PerDay" in quota["quotaId"] and quota["quotaValue"] == "2"


def test_limits_are_per_provider_name(make_sandbox):
    sb = make_sandbox({"providers": {"tiny": {"rpm": 60, "bucket_s": 1.0}}})
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        tiny = [c.post("/p/tiny" + GENERATE, json=gemini_body(f"t{i}")).status_code for i in range(2)]
        other = [c.post("/p/other" + GENERATE, json=gemini_body(f"o{i}")).status_code for i in range(2)]
    assert tiny == [200, 429]
    assert other == [200, 200]
    assert sb.ledger()["by_provider"]["tiny"]["by_status"] == {"200": 1, "429": 1}
