"""AIML API's documented dialect, both ways: the adapter parses every response capture to its expected outcome and
sends the request captures' shape; the sandbox (protocol aimlapi) answers with the response captures' shapes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.errors import ProviderError
from pipeline.presets import AIML_MAX_INLINE_REFERENCE_BYTES
from pipeline.providers.base import CallHooks, ImageRequest, Reference
from pipeline.providers.checks import refusal
from pipeline.providers.openai_images import OpenAIImagesProvider
from tests.providers.corpus import Capture, captures, shape_problems
from tests.providers.provider_wire import KEY, Recorder, assert_no_key, b64, config, image_bytes, sized

OUT_URL = "https://provider.test/out/1.png"
REQ = ImageRequest(prompt="a mug", resolution="1K", aspect_ratio="1:1")
REF = Reference(data=image_bytes(8, 8), mime_type="image/png", sha256="a")


def by_name(name: str) -> Capture:
    return next(c for c in captures("aimlapi") if c.path.stem == name)


def answer_for(capture: Capture) -> Recorder:
    png = sized("1:1", "1K")
    body = capture.body_with(IMAGE_B64=b64(png), IMAGE_URL=OUT_URL)

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == OUT_URL:
            return httpx.Response(200, content=png, headers={"content-type": "image/png"})
        return httpx.Response(capture.status or 200, json=body)

    return Recorder([handler])


def adapter(rec: Recorder) -> OpenAIImagesProvider:
    return OpenAIImagesProvider(config("aimlapi"), KEY, rec.client())


@pytest.mark.parametrize("capture", captures("aimlapi", "response"), ids=lambda c: c.id)
def test_adapter_parses_every_documented_answer(capture: Capture) -> None:
    want = capture.expect
    rec = answer_for(capture)
    if want["outcome"] == "image":
        result = adapter(rec).generate(REQ, CallHooks())
        assert result.data == sized("1:1", "1K")
        assert result.cost_source == want.get("cost_source", result.cost_source)
        expected_cost = want.get("cost_usd")
        assert result.cost_usd == (Decimal(expected_cost) if expected_cost else Decimal("0.10"))
        return
    with pytest.raises(ProviderError) as info:
        adapter(rec).generate(REQ, CallHooks())
    err = info.value
    assert_no_key(err)
    assert err.error_class == want["error_class"], err
    assert err.http_status == capture.status
    if "retry_after_s" in want:
        assert err.retry_after_s == pytest.approx(want["retry_after_s"])


@pytest.mark.parametrize(
    ("request_", "capture_name"),
    [(REQ, "generate-request"), (ImageRequest("a mug", "1K", "1:1", references=(REF, REF)), "edit-request")],
)
def test_adapter_sends_the_documented_request(request_: ImageRequest, capture_name: str) -> None:
    documented = by_name(capture_name)
    rec = answer_for(by_name("generate-response-b64"))
    adapter(rec).generate(request_, CallHooks())
    sent = rec.requests[0]
    assert sent.method == documented.method
    assert sent.url.path == documented.route
    assert sent.headers["content-type"] == "application/json"
    body = json.loads(sent.content)
    assert shape_problems(body, documented.body, nullable=False) == []
    assert set(body) <= set(documented.body), f"fields AIML does not document: {set(body) - set(documented.body)}"
    assert body["model"] == documented.body["model"]
    if request_.references:
        assert all(u.startswith("data:image/png;base64,") for u in body["image_urls"])


def test_large_reference_is_refused_before_any_call() -> None:
    big = AIML_MAX_INLINE_REFERENCE_BYTES + 1
    why = refusal(config("aimlapi"), "1K", "1:1", [10, big])
    assert why and "aimlapi" in why and "data URL" in why
    assert refusal(config("aimlapi"), "4K", "21:9", [10]) is None  # AIML documents 4K and 21:9
    assert refusal(config("aimlapi"), "1K", "1:1", [10] * 15)  # more than the 14 documented


# --- the sandbox answers with the documented shapes -------------------------------------------------------------


def post(sandbox: Any, body: Any, *, key: str = "k") -> httpx.Response:
    url = f"{sandbox.url}/p/aimlapi/v1/images/generations"
    return httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.mark.parametrize("name", ["generate-request", "edit-request"])
def test_sandbox_answers_request_captures_with_documented_shape(sandbox: Any, name: str) -> None:
    resp = post(sandbox, by_name(name).body)
    assert resp.status_code == 200, resp.text
    assert shape_problems(resp.json(), by_name("generate-response-url").body) == []
    data = resp.json()["data"][0]
    image = httpx.get(data["url"], timeout=30)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    ("trigger", "capture_name"),
    [("[sandbox:no-credit]", "error-403-credits"), ("[sandbox:auth]", "error-401-key"),
     ("[sandbox:429]", "error-429"), ("[sandbox:500]", "error-500"), ("[sandbox:503]", "error-503")],
)
def test_sandbox_errors_have_documented_shape(sandbox: Any, trigger: str, capture_name: str) -> None:
    body = {**by_name("generate-request").body, "prompt": f"a mug {trigger}"}
    resp = post(sandbox, body)
    documented = by_name(capture_name)
    assert resp.status_code == documented.status
    problems = shape_problems(resp.json(), {k: v for k, v in documented.body.items() if k != "statusCode"})
    assert problems == [] and resp.json()["statusCode"] == documented.status


def test_sandbox_refuses_undocumented_fields_like_aiml(sandbox: Any) -> None:
    body = {**by_name("generate-request").body, "size": "1024x1024", "n": 1}
    resp = post(sandbox, body)
    assert resp.status_code == 400
    assert shape_problems(resp.json(), by_name("error-400-validation").body) == []
    assert httpx.post(f"{sandbox.url}/p/aimlapi/v1/images/edits", json=body, timeout=30).status_code == 404


def test_adapter_against_sandbox_end_to_end(sandbox: Any) -> None:
    with httpx.Client() as client:
        p = OpenAIImagesProvider(config("aimlapi", base_url=f"{sandbox.url}/p/aimlapi"), KEY, client)
        plain = p.generate(ImageRequest("a red mug", "1K", "4:5"), CallHooks())
        edited = p.generate(ImageRequest("a red mug, edited", "2K", "16:9", references=(REF,)), CallHooks())
    assert plain.cost_usd == Decimal("0.10") and edited.cost_usd == Decimal("0.10")
    ledger = sandbox.ledger()["by_provider"]["aimlapi"]
    assert ledger["billed_images"] == 2 and ledger["by_status"] == {"200": 2}
