"""Fault triggers and fault rates over real HTTP (Gemini protocol)."""

from __future__ import annotations

import base64
import binascii
import io
import json
from decimal import Decimal

import httpx
import pytest
from PIL import Image

from pipeline.providers.base import SIZES
from pipeline.providers.pricing import blocked_call_cost
from pipeline.sandbox.faults import Fault, parse_triggers
from tests.sandbox.sandbox_helpers import GENERATE, final_image, gemini_body, image_size


def post(sb, http, prompt: str, **kw):
    return http.post(sb.url + GENERATE, json=gemini_body(prompt, **kw))


def test_block_prompt(sandbox, http):
    body = post(sandbox, http, "x [sandbox:block-prompt]").json()
    assert "candidates" not in body
    assert body["promptFeedback"]["blockReason"] == "PROHIBITED_CONTENT"
    assert body["usageMetadata"]["totalTokenCount"] == body["usageMetadata"]["promptTokenCount"]


def test_block_image(sandbox, http):
    cand = post(sandbox, http, "x [sandbox:block-image]").json()["candidates"][0]
    assert cand["finishReason"] == "IMAGE_SAFETY"
    assert cand["content"] == {}
    assert "not be charged" in cand["finishMessage"]


def test_refusal_is_text_only(sandbox, http):
    cand = post(sandbox, http, "x [sandbox:refuse]").json()["candidates"][0]
    assert cand["finishReason"] == "STOP"
    assert [list(p) for p in cand["content"]["parts"]] == [["text"]]


def test_500_and_503_bodies(sandbox, http):
    r500 = post(sandbox, http, "[sandbox:500]")
    assert r500.status_code == 500
    assert r500.json()["error"]["status"] == "INTERNAL"
    r503 = post(sandbox, http, "[sandbox:503]")
    assert r503.status_code == 503
    assert r503.json() == {
        "error": {
            "code": 503,
            "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE",
        }
    }


def _details(body):
    return {d["@type"].rsplit(".", 1)[-1]: d for d in body["error"]["details"]}


def test_429_is_resource_exhausted_with_retry_info_and_no_header(sandbox, http):
    r = post(sandbox, http, "[sandbox:429]")
    assert r.status_code == 429
    assert "retry-after" not in r.headers
    body = r.json()
    assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
    details = _details(body)
    assert details["RetryInfo"]["retryDelay"] == "1.5s"
    assert "PerMinute" in details["QuotaFailure"]["violations"][0]["quotaId"]
    assert "Please retry in 1.5s." in body["error"]["message"]


def test_daily_quota_and_no_credit(sandbox, http):
    daily = _details(post(sandbox, http, "[sandbox:429-daily]").json())
    assert "PerDay" in daily["QuotaFailure"]["violations"][0]["quotaId"]
    broke = post(sandbox, http, "[sandbox:no-credit]")
    assert broke.status_code == 429
    assert _details(broke.json())["QuotaFailure"]["violations"][0]["quotaValue"] == "0"


def test_malformed_json_is_billed(sandbox, http):
    r = post(sandbox, http, "[sandbox:malformed]")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    assert sandbox.ledger()["billed_images"] == 1


def test_truncated_base64(sandbox, http):
    part = post(sandbox, http, "[sandbox:truncated]").json()["candidates"][0]["content"]["parts"][-1]
    data = part["inlineData"]["data"]
    with pytest.raises((binascii.Error, OSError, SyntaxError, ValueError)):
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            img.load()


def test_wrong_size(sandbox, http):
    data, _ = final_image(post(sandbox, http, "[sandbox:wrong-size]", ratio="16:9", size="1K").json())
    assert image_size(data) != SIZES["16:9"]["1K"]
    assert sandbox.ledger()["billed_images"] == 1


def test_hang_times_out_the_client_but_is_billed(make_sandbox):
    sb = make_sandbox({"protocols": {"gemini": {"hang_s": 1.0}}})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(sb.url + GENERATE, json=gemini_body("[sandbox:hang]"), timeout=0.3)
    import time

    deadline = time.monotonic() + 5
    while sb.ledger()["billed_images"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sb.ledger()["billed_images"] == 1  # "maybe billed": the provider finished the work


def test_fault_n_times_then_success(sandbox, http):
    codes = [post(sandbox, http, "retry me [sandbox:503x2]").status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    sandbox.reset()  # reset forgets the counts
    assert post(sandbox, http, "retry me [sandbox:503x2]").status_code == 503


def test_sleep_trigger_adds_latency(sandbox, http):
    import time

    start = time.monotonic()
    assert post(sandbox, http, "slow [sandbox:sleep=0.4]").status_code == 200
    assert time.monotonic() - start >= 0.4


def test_blocked_answers_bill_no_image_and_errors_bill_nothing(sandbox, http):
    for trig in ("500", "503", "429"):
        post(sandbox, http, f"[sandbox:{trig}]")
    ledger = sandbox.ledger()
    assert ledger["requests"] == 3 and ledger["billed_images"] == 0 and ledger["billed_usd"] == "0"
    # blocks and refusals are 200 answers: their reported prompt and thinking tokens are billed, no image
    expected = Decimal(0)
    for trig in ("block-prompt", "block-image", "refuse"):
        body = post(sandbox, http, f"[sandbox:{trig}]").json()
        cost = blocked_call_cost(body["usageMetadata"], batch=False)
        assert cost is not None and cost > 0
        expected += cost
    ledger = sandbox.ledger()
    assert ledger["billed_images"] == 0 and Decimal(ledger["billed_usd"]) == expected


def test_fault_rates_with_a_seed_repeat(make_sandbox):
    profile = {"seed": 11, "protocols": {"gemini": {"faults": {"http_503": 0.3, "block_image": 0.2}}}}

    def run() -> list[int | str]:
        sb = make_sandbox(profile)
        out: list[int | str] = []
        with httpx.Client(base_url=sb.url, timeout=30) as c:
            for i in range(30):
                r = c.post(GENERATE, json=gemini_body(f"p{i}"))
                out.append(
                    r.status_code if r.status_code != 200 else r.json()["candidates"][0]["finishReason"]
                )
        return out

    first, second = run(), run()
    assert first == second
    assert 503 in first and "IMAGE_SAFETY" in first and "STOP" in first


def test_rate_one_means_always(make_sandbox):
    sb = make_sandbox({"protocols": {"gemini": {"faults": {"http_500": 1.0}}}})
    codes = {httpx.post(sb.url + GENERATE, json=gemini_body(f"q{i}")).status_code for i in range(5)}
    assert codes == {500}


def test_parse_triggers():
    t = parse_triggers("a [sandbox:503x2] b [sandbox:sleep=0.25] [sandbox:interim]")
    assert (t.fault, t.times, t.extra_latency_s, t.interim_image) == (Fault.HTTP_503, 2, 0.25, True)
    assert parse_triggers("[sandbox:429-daily]").fault is Fault.DAILY_QUOTA
    assert parse_triggers("no triggers").fault is None
