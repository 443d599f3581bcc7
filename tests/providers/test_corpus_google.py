"""Google's documented shapes, both ways: GeminiProvider (standard and Flex) and the batch client parse every
response capture to its expected outcome, class and cost, and send the request captures' shape; the sandbox
answers the request captures with the documented shapes (Flex, shed, a model refusing Flex, rpc item errors)."""

from __future__ import annotations

import copy
import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.errors import ProviderError
from pipeline.providers.base import CallHooks, ImageRequest, ImageResult, Reference
from pipeline.providers.gemini import GeminiProvider
from pipeline.providers.gemini_batch import BatchStatus, GeminiBatchClient
from tests.providers.corpus import Capture, captures, shape_problems
from tests.providers.provider_wire import KEY, Recorder, assert_no_key, b64, config, image_bytes, sized

REQ = ImageRequest(prompt="a mug", resolution="1K", aspect_ratio="1:1")
REF = Reference(data=image_bytes(8, 8), mime_type="image/png", sha256="a")
SYNC = [c for c in captures("google", "response") if not c.expect.get("batch_item")]
BATCH = [c for c in captures("google", "response") if c.expect.get("batch_item")]


def by_name(name: str) -> Capture:
    return next(c for c in captures("google") if c.path.stem == name)


def answering(capture: Capture) -> Recorder:
    body = capture.body_with(IMAGE_B64=b64(sized("1:1", "1K")))
    return Recorder([httpx.Response(capture.status or 200, json=body)])


def outcome(preset: str, capture: Capture) -> ImageResult | ProviderError:
    rec = answering(capture)
    try:
        return GeminiProvider(config(preset), KEY, rec.client()).generate(REQ, CallHooks())
    except ProviderError as e:
        assert_no_key(e)
        return e


@pytest.mark.parametrize("capture", SYNC, ids=lambda c: c.id)
def test_adapter_parses_every_documented_answer(capture: Capture) -> None:
    want = capture.expect
    got = outcome("google", capture)
    if want["outcome"] == "image":
        assert isinstance(got, ImageResult) and got.data == sized("1:1", "1K")
        assert (got.cost_usd, got.cost_source) == (Decimal(want["cost_usd"]), want["cost_source"])
        return
    assert isinstance(got, ProviderError) and got.error_class == want["error_class"], got
    if "cost_usd" in want:  # a blocked call is billed for the tokens it reports, not for an image
        assert got.cost_usd == Decimal(want["cost_usd"]) and not got.maybe_billed


@pytest.mark.parametrize("capture", SYNC, ids=lambda c: c.id)
def test_flex_reads_the_same_answers(capture: Capture) -> None:
    """On the Flex tier the same answers cost half; 503s and quota-less 429s are shed, not faults."""
    want = capture.expect
    got = outcome("google-flex", capture)
    if want["outcome"] == "image":
        assert isinstance(got, ImageResult) and got.cost_usd == Decimal(want["cost_usd"]) / 2
        return
    assert isinstance(got, ProviderError)
    assert got.error_class == want.get("flex_error_class", want["error_class"]), got
    if got.error_class == "shed":
        assert got.retryable and got.retry_after_s and not got.maybe_billed
    if "cost_usd" in want:
        assert got.cost_usd == Decimal(want["cost_usd"]) / 2


@pytest.mark.parametrize("capture", BATCH, ids=lambda c: c.id)
def test_batch_items_carry_rpc_codes(capture: Capture) -> None:
    op = {"name": "batches/b1", "done": True, "metadata": {"state": "BATCH_STATE_SUCCEEDED", "output": {
        "inlinedResponses": {"inlinedResponses": [capture.body]}}}}
    client = GeminiBatchClient(config("google-batch"), KEY, httpx.Client())
    results = client.results(BatchStatus.from_operation(op), {"item-0001": REQ})
    err = results["item-0001"]
    assert isinstance(err, ProviderError) and err.error_class == capture.expect["error_class"], err
    # the status string, when a proxy adds one, names the code too
    named = copy.deepcopy(capture.body)
    named["error"]["code"] = 2  # UNKNOWN: the name must win
    named["error"]["status"] = capture.notes.split(" = ")[1].split(",")[0]
    op["metadata"]["output"]["inlinedResponses"]["inlinedResponses"] = [named]  # type: ignore[index]
    again = client.results(BatchStatus.from_operation(op), {"item-0001": REQ})["item-0001"]
    assert isinstance(again, ProviderError) and again.error_class == err.error_class


@pytest.mark.parametrize(("preset", "name"), [("google", "generate-request"), ("google-flex", "generate-request-flex")])
def test_adapter_sends_the_documented_request(preset: str, name: str) -> None:
    documented = by_name(name)
    rec = answering(by_name("generate-response-image"))
    GeminiProvider(config(preset), KEY, rec.client()).generate(
        ImageRequest("a mug", "1K", "1:1", references=(REF,)), CallHooks())
    sent = rec.requests[0]
    assert (sent.method, sent.url.path) == (documented.method, documented.route)
    assert sent.headers["x-goog-api-key"] == KEY
    body = json.loads(sent.content)
    doc = copy.deepcopy(documented.body)
    doc_parts = {next(iter(p)): p for p in doc["contents"][0].pop("parts")}  # a text part, an inlineData part
    sent_parts = body["contents"][0].pop("parts")
    assert shape_problems(body, doc, nullable=False) == []
    assert [next(iter(p)) for p in sent_parts] == ["text", "inlineData"]
    assert all(shape_problems(p, doc_parts[next(iter(p))], nullable=False) == [] for p in sent_parts)
    assert set(body) == set(documented.body)
    assert body.get("serviceTier") == documented.body.get("serviceTier")


def test_flex_refused_by_the_model_falls_back_to_standard() -> None:
    message = "Service tier 'flex' is not supported for model models/gemini-3-pro-image-preview."
    refusal = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": message}}
    image = answering(by_name("generate-response-image")).answers[0]
    rec = Recorder([httpx.Response(400, json=refusal), image, image])
    p = GeminiProvider(config("google-flex"), KEY, rec.client())
    first = p.generate(REQ, CallHooks())
    assert first.cost_usd == Decimal("0.151264") and first.usage["service_tier_fallback"] == "standard"
    assert [json.loads(r.content).get("serviceTier") for r in rec.requests] == ["flex", None]
    p.generate(REQ, CallHooks())  # no second refused call: standard from now on
    assert json.loads(rec.requests[-1].content).get("serviceTier") is None and len(rec.requests) == 3


# --- the sandbox answers with the documented shapes -------------------------------------------------------------


def documented_answer() -> dict[str, Any]:
    body = copy.deepcopy(by_name("generate-response-image").body)
    body["candidates"][0]["content"]["parts"] = []  # parts differ in kind; each is checked below
    return body


def post(sandbox: Any, capture: Capture, prefix: str = "", prompt: str | None = None) -> httpx.Response:
    body = capture.body_with(IMAGE_B64=b64(image_bytes(16, 16)))
    if prompt is not None:
        body["contents"][0]["parts"][0]["text"] = prompt
    return httpx.post(f"{sandbox.url}{prefix}{capture.route}", json=body, headers={"x-goog-api-key": "k"}, timeout=30)


@pytest.mark.parametrize("name", ["generate-request", "generate-request-flex"])
def test_sandbox_answers_request_captures(sandbox: Any, name: str) -> None:
    resp = post(sandbox, by_name(name))
    assert resp.status_code == 200, resp.text
    assert shape_problems(resp.json(), documented_answer()) == []
    parts = resp.json()["candidates"][0]["content"]["parts"]
    assert any("inlineData" in p for p in parts) and all(("text" in p) or ("inlineData" in p) for p in parts)
    standard = Decimal(sandbox.ledger()["billed_usd"]) if name == "generate-request" else None
    if standard is not None:
        sandbox.reset()
        post(sandbox, by_name("generate-request-flex"))
        assert Decimal(sandbox.ledger()["billed_usd"]) < standard  # Flex bills the batch (half) rates


def test_sandbox_shed_and_refusal_shapes(sandbox: Any) -> None:
    shed = post(sandbox, by_name("generate-request-flex"), prompt="a mug [sandbox:shed]")
    assert shed.status_code == 429 and shape_problems(shed.json(), by_name("error-429-bare").body) == []
    refused = post(sandbox, by_name("generate-request-flex"), prefix="/p/gemini-noflex")
    assert refused.status_code == 400 and "Service tier" in refused.json()["error"]["message"]
    assert post(sandbox, by_name("generate-request"), prefix="/p/gemini-noflex").status_code == 200


def test_flex_adapter_against_the_sandbox(sandbox: Any) -> None:
    with httpx.Client() as http:
        flex = GeminiProvider(config("google-flex", base_url=sandbox.url), KEY, http)
        result = flex.generate(ImageRequest("a blue mug", "1K", "1:1"))
        assert result.cost_usd == Decimal(sandbox.ledger()["billed_usd"])
        with pytest.raises(ProviderError) as info:
            flex.generate(ImageRequest("a mug [sandbox:shed]", "1K", "1:1"))
        assert info.value.error_class == "shed"
        noflex = GeminiProvider(config("google-flex", base_url=f"{sandbox.url}/p/gemini-noflex"), KEY, http)
        fallback = noflex.generate(ImageRequest("a green mug", "1K", "1:1"))
    assert fallback.usage["service_tier_fallback"] == "standard"
    assert sandbox.ledger()["by_provider"]["gemini-noflex"]["by_status"] == {"200": 1, "400": 1}


def test_sandbox_batch_item_errors_are_rpc_status(sandbox: Any) -> None:
    with httpx.Client() as http:
        c = GeminiBatchClient(config("google-batch", base_url=sandbox.url), KEY, http)
        reqs = {"limited": ImageRequest("a [sandbox:429]", "1K", "1:1"),
                "broken": ImageRequest("a [sandbox:500]", "1K", "1:1")}
        handle = c.create("rpc-errors", list(reqs.items()))
        deadline = time.monotonic() + 15
        while not (status := c.get(handle.name)).done:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        items = status.raw["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
        for item in items:
            assert shape_problems(item, by_name("batch-item-error-exhausted").body) == []
        assert {i["error"]["code"] for i in items} == {8, 13}
        results = c.results(status, reqs)
    assert results["limited"].error_class == "rate_limited"  # type: ignore[union-attr]
    assert results["broken"].error_class == "unavailable"  # type: ignore[union-attr]
