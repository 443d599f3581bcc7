"""The ledger: counts, statuses, exact billed USD from the same usage numbers, flat prices, reset."""

from __future__ import annotations

import threading
from decimal import Decimal

import httpx

from pipeline.providers.pricing import blocked_call_cost
from pipeline.sandbox.ledger import Ledger
from tests.sandbox.sandbox_helpers import GENERATE, gemini_body, gemini_cost


def test_billed_usd_is_the_gemini_formula_over_the_reported_usage(sandbox, http):
    expected = Decimal(0)
    for prompt, size in (("one", "1K"), ("two", "2K"), ("three", "4K")):
        body = http.post(sandbox.url + GENERATE, json=gemini_body(prompt, size=size)).json()
        expected += gemini_cost(body["usageMetadata"])
    blocked = http.post(sandbox.url + GENERATE, json=gemini_body("[sandbox:block-image]")).json()
    expected += blocked_call_cost(blocked["usageMetadata"], batch=False) or 0  # its tokens, not an image
    ledger = http.get(sandbox.url + "/_sandbox/ledger").json()
    assert ledger["requests"] == 4
    assert ledger["generate_requests"] == 4
    assert ledger["billed_images"] == 3
    assert ledger["by_status"] == {"200": 4}
    assert Decimal(ledger["billed_usd"]) == expected
    assert Decimal("0.134") * 2 + Decimal("0.24") < expected < Decimal("0.7")
    gemini = ledger["by_provider"]["gemini"]
    assert gemini["protocol"] == "gemini" and gemini["billed_usd"] == ledger["billed_usd"]


def test_reset_over_http(sandbox, http):
    http.post(sandbox.url + GENERATE, json=gemini_body("x"))
    assert http.post(sandbox.url + "/_sandbox/reset").json() == {"ok": True}
    ledger = http.get(sandbox.url + "/_sandbox/ledger").json()
    assert ledger == {
        "requests": 0,
        "generate_requests": 0,
        "billed_images": 0,
        "by_status": {},
        "billed_usd": "0",
        "by_provider": {},
    }


def test_flat_price_per_image_for_a_provider(make_sandbox):
    sb = make_sandbox({"providers": {"cheap": {"price_per_image": {"1K": "0.05", "4K": "0.08"}}}})
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        c.post("/p/cheap" + GENERATE, json=gemini_body("a", size="1K"))
        c.post("/p/cheap" + GENERATE, json=gemini_body("b", size="4K"))
        usage = c.post("/p/cheap" + GENERATE, json=gemini_body("c", size="2K")).json()["usageMetadata"]
    cheap = sb.ledger()["by_provider"]["cheap"]
    # 2K has no flat price: priced from usage like Google
    assert Decimal(cheap["billed_usd"]) == Decimal("0.13") + gemini_cost(usage)
    assert cheap["billed_images"] == 3


def test_ledger_is_thread_safe():
    ledger = Ledger()

    def work() -> None:
        for _ in range(1000):
            ledger.request("p", "gemini", 200, generate=True)
            ledger.bill("p", "gemini", 1, Decimal("0.001"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = ledger.snapshot()
    assert snap["requests"] == 8000 and snap["billed_images"] == 8000
    assert Decimal(snap["billed_usd"]) == Decimal("8.000")


def test_in_process_ledger_matches_http(sandbox, http):
    http.post(sandbox.url + GENERATE, json=gemini_body("same"))
    assert sandbox.ledger() == http.get(sandbox.url + "/_sandbox/ledger").json()
