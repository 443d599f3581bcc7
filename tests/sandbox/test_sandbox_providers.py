"""One sandbox standing in for several providers: /p/{name}/ prefixes, per-provider ledgers and profiles."""

from __future__ import annotations

from decimal import Decimal

import httpx

from tests.sandbox.sandbox_helpers import GENERATE, gemini_body

PROFILE = {
    "providers": {
        "kie": {"protocol": "openai", "price_per_image": {"1K": "0.09", "2K": "0.09", "4K": "0.12"}},
        "laozhang": {"protocol": "gemini", "price_per_image": {"1K": "0.05", "2K": "0.05", "4K": "0.08"}},
        "flaky": {"protocol": "gemini", "faults": {"http_503": 1.0}},
    }
}


def test_per_provider_ledgers_and_totals(make_sandbox):
    sb = make_sandbox(PROFILE)
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        assert c.post("/p/kie/v1/images/generations", json={"prompt": "k"}).status_code == 200
        assert c.post("/p/laozhang" + GENERATE, json=gemini_body("l")).status_code == 200
        assert c.post("/p/laozhang" + GENERATE, json=gemini_body("l2")).status_code == 200
        assert c.post("/p/flaky" + GENERATE, json=gemini_body("f")).status_code == 503
        assert c.post(GENERATE, json=gemini_body("plain")).status_code == 200
        assert (
            c.post(
                "/v1/models/google/nano-banana-pro/predictions", json={"input": {"prompt": "r"}}
            ).status_code
            == 201
        )
        ledger = c.get("/_sandbox/ledger").json()
    by = ledger["by_provider"]
    assert set(by) == {"kie", "laozhang", "flaky", "gemini", "replicate"}
    assert by["kie"]["billed_usd"] == "0.09" and by["kie"]["protocol"] == "openai"
    assert Decimal(by["laozhang"]["billed_usd"]) == Decimal("0.10")
    assert by["flaky"]["by_status"] == {"503": 1} and by["flaky"]["billed_images"] == 0
    assert ledger["requests"] == sum(p["requests"] for p in by.values()) == 6
    assert Decimal(ledger["billed_usd"]) == sum(Decimal(p["billed_usd"]) for p in by.values())


def test_a_provider_configured_for_one_protocol_does_not_serve_another(make_sandbox):
    sb = make_sandbox(PROFILE)
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        assert c.post("/p/kie" + GENERATE, json=gemini_body("wrong door")).status_code == 404
        assert c.post("/p/laozhang/v1/images/generations", json={"prompt": "x"}).status_code == 404
    assert sb.ledger()["requests"] == 0


def test_unconfigured_names_get_the_protocol_defaults(make_sandbox):
    sb = make_sandbox({"protocols": {"gemini": {"rpm": 60, "bucket_s": 1.0}}})
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        codes = [c.post("/p/newcomer" + GENERATE, json=gemini_body(f"n{i}")).status_code for i in range(2)]
    assert codes == [200, 429]
