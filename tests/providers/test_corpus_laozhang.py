"""laozhang.ai's documented shapes, both ways, for the `laozhang` preset (Google's native format, Bearer key): the
adapter reads laozhang's documented answers (a spent balance: 429 insufficient_user_quota pauses the provider; an
HTTP 200 without an image is billed one call) and Google's answers it passes through, and sends to the documented
path in Google's request shape; the sandbox (provider `laozhang`) answers with the same shapes and bills the same.
laozhang's own request and answer bodies could not be read (captures/laozhang/*: notes)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.errors import ProviderError
from pipeline.providers.base import CallHooks, ImageRequest, Reference
from pipeline.providers.gemini import GeminiProvider
from tests.providers.corpus import Capture, captures, shape_problems
from tests.providers.provider_wire import KEY, Recorder, assert_no_key, b64, config, image_bytes, sized

REQ = ImageRequest(prompt="a mug", resolution="1K", aspect_ratio="1:1")
REF = Reference(data=image_bytes(8, 8), mime_type="image/png", sha256="a")
#: Google's answers laozhang passes through: the image and the errors (its blocks are laozhang's own capture)
PASSED_THROUGH = ["generate-response-image", "error-400-key", "error-429-quota", "error-503"]


def by_name(provider: str, name: str) -> Capture:
    return next(c for c in captures(provider) if c.path.stem == name)


def answering(capture: Capture) -> Recorder:
    if capture.body_text is not None:
        return Recorder([httpx.Response(capture.status or 200, text=capture.body_text)])
    body = capture.body_with(IMAGE_B64=b64(sized("1:1", "1K")))
    return Recorder([httpx.Response(capture.status or 200, json=body)])


def adapter(rec: Recorder) -> GeminiProvider:
    return GeminiProvider(config("laozhang"), KEY, rec.client())


@pytest.mark.parametrize("capture", captures("laozhang", "response"), ids=lambda c: c.id)
def test_adapter_reads_laozhangs_documented_answers(capture: Capture) -> None:
    with pytest.raises(ProviderError) as info:
        adapter(answering(capture)).generate(REQ, CallHooks())
    err = info.value
    assert_no_key(err)
    assert err.error_class == capture.expect["error_class"] and err.http_status == capture.status
    if "cost_usd" in capture.expect:  # billed as one call, at the preset's per-call price
        assert err.cost_usd == Decimal(capture.expect["cost_usd"]) == config("laozhang").prices["blocked"]
    else:
        assert err.cost_usd is None and not err.maybe_billed


@pytest.mark.parametrize("name", PASSED_THROUGH)
def test_adapter_reads_googles_answers_at_laozhangs_price(name: str) -> None:
    capture = by_name("google", name)
    rec = answering(capture)
    if capture.expect["outcome"] == "image":
        result = adapter(rec).generate(REQ, CallHooks())
        assert (result.cost_usd, result.cost_source) == (Decimal("0.05"), "price_table")  # its table, not tokens
        return
    with pytest.raises(ProviderError) as info:
        adapter(rec).generate(REQ, CallHooks())
    assert info.value.error_class == capture.expect["error_class"] and info.value.cost_usd is None


def test_adapter_sends_googles_request_shape_to_the_documented_path() -> None:
    body = by_name("google", "generate-response-image").body_with(IMAGE_B64=b64(sized("16:9", "2K")))
    rec = Recorder([httpx.Response(200, json=body)])
    adapter(rec).generate(ImageRequest("a mug", "2K", "16:9", references=(REF,)), CallHooks())
    documented = by_name("laozhang", "generate-request")
    sent = rec.requests[0]
    assert (sent.method, sent.url.path) == (documented.method, documented.route)
    assert sent.headers["authorization"] == f"Bearer {KEY}" and "x-goog-api-key" not in sent.headers
    body = json.loads(sent.content)
    assert shape_problems(body, by_name("google", "generate-request").body, nullable=False, mixed_lists=True) == []
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}


# --- the sandbox answers as laozhang documents -----------------------------------------------------------------


def post(sandbox: Any, prompt: str) -> httpx.Response:
    body = {"contents": [{"parts": [{"text": prompt}]}],
            "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "1:1",
                                                                                 "imageSize": "1K"}}}
    route = by_name("laozhang", "generate-request").route
    return httpx.post(f"{sandbox.url}/p/laozhang{route}", json=body, headers={"Authorization": "Bearer k"}, timeout=30)


def test_sandbox_answers_a_spent_balance_as_documented(sandbox: Any) -> None:
    documented = by_name("laozhang", "error-429-insufficient-user-quota")
    resp = post(sandbox, "a mug [sandbox:no-credit]")
    assert (resp.status_code, resp.text) == (documented.status, documented.body_text)
    assert sandbox.ledger()["by_provider"]["laozhang"]["billed_usd"] in ("0", "0.00")


@pytest.mark.parametrize("trigger", ["refuse", "block-image", "block-prompt"])
def test_sandbox_bills_an_answer_without_image_as_one_call_and_the_adapter_agrees(
        sandbox: Any, trigger: str) -> None:
    resp = post(sandbox, f"a mug [sandbox:{trigger}]")
    assert resp.status_code == 200
    if trigger == "refuse":
        documented = by_name("laozhang", "generate-refusal-billed").body
        assert shape_problems(resp.json(), documented, mixed_lists=True) == []
    account = sandbox.ledger()["by_provider"]["laozhang"]
    assert (account["billed_images"], Decimal(account["billed_usd"])) == (0, Decimal("0.05"))
    sandbox.reset()
    with httpx.Client() as http:
        p = GeminiProvider(config("laozhang", base_url=f"{sandbox.url}/p/laozhang"), KEY, http)
        with pytest.raises(ProviderError) as info:
            p.generate(ImageRequest(f"a cup [sandbox:{trigger}]", "1K", "1:1"), CallHooks())
    assert info.value.error_class == "content_blocked"
    assert info.value.cost_usd == Decimal(sandbox.ledger()["by_provider"]["laozhang"]["billed_usd"])


def test_adapter_against_the_sandbox_pauses_on_a_spent_balance(sandbox: Any) -> None:
    with httpx.Client() as http:
        p = GeminiProvider(config("laozhang", base_url=f"{sandbox.url}/p/laozhang"), KEY, http)
        with pytest.raises(ProviderError) as info:
            p.generate(ImageRequest("a mug [sandbox:no-credit]", "1K", "1:1"), CallHooks())
        image = p.generate(ImageRequest("a mug", "1K", "1:1"), CallHooks())
    assert info.value.error_class == "insufficient_quota" and info.value.http_status == 429
    assert image.cost_usd == Decimal(sandbox.ledger()["by_provider"]["laozhang"]["billed_usd"])
