"""AIML API's documented dialect, both ways: the adapter parses every response capture to its expected outcome and
sends the request captures' shape (references inline as data URLs, above the preset's size as presigned S3 URLs,
over moto); the sandbox (protocol aimlapi) answers with the response captures' shapes and fetches image_urls."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.errors import InvalidRequest, ProviderError
from pipeline.presets import AIML_MAX_INLINE_REFERENCE_BYTES, PRESETS
from pipeline.providers.base import CallHooks, ImageRequest, Reference
from pipeline.providers.checks import refusal
from pipeline.providers.factory import presigned_references
from pipeline.providers.openai_images import OpenAIImagesProvider
from pipeline.storage.factory import open_storage
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


def test_large_reference_needs_presigned_urls_else_it_is_refused_before_any_call() -> None:
    big = AIML_MAX_INLINE_REFERENCE_BYTES + 1
    why = refusal(config("aimlapi"), "1K", "1:1", [10, big], presigns=False)
    assert why and "aimlapi" in why and "data URL" in why and "s3://" in why
    assert refusal(config("aimlapi"), "1K", "1:1", [10, big], presigns=True) is None  # passed by presigned URL
    assert refusal(config("aimlapi"), "4K", "21:9", [10], presigns=False) is None  # AIML documents 4K and 21:9
    assert refusal(config("aimlapi"), "1K", "1:1", [10] * 15, presigns=True)  # more than the 14 documented
    rec = answer_for(by_name("generate-response-b64"))
    big_ref = Reference(data=b"\x89PNG" + bytes(big), mime_type="image/png", sha256="b")
    with pytest.raises(InvalidRequest, match="data URL"):  # no storage to presign from: nothing is sent
        adapter(rec).generate(ImageRequest("a mug", "1K", "1:1", references=(big_ref,)), CallHooks())
    assert rec.requests == []


def test_references_above_the_inline_size_go_as_presigned_urls(
        s3_bucket: tuple[str, str], s3_env: dict[str, str]) -> None:
    small, large = image_bytes(8, 8), image_bytes(64, 64)
    cfg = config("aimlapi", images={**PRESETS["aimlapi"]["images"], "max_inline_reference_bytes": len(small)})
    storage = open_storage(f"s3://{s3_bucket[1]}/out", env=s3_env)
    rec = answer_for(by_name("generate-response-b64"))
    refs = (Reference(small, "image/png", hashlib.sha256(small).hexdigest()),
            Reference(large, "image/png", hashlib.sha256(large).hexdigest()))
    provider = OpenAIImagesProvider(cfg, KEY, rec.client(), references=presigned_references(cfg, storage))
    provider.generate(ImageRequest("a mug", "1K", "1:1", references=refs), CallHooks())
    inline, by_url = rec.json_body()["image_urls"]
    assert inline.startswith("data:image/png;base64,")
    assert "X-Amz-Signature=" in by_url and f"out/provider-references/{refs[1].sha256}.png" in by_url
    assert httpx.get(by_url).content == large  # the object is there for AIML to fetch


# --- the sandbox answers with the documented shapes -------------------------------------------------------------


def post(sandbox: Any, body: Any, *, key: str = "k") -> httpx.Response:
    url = f"{sandbox.url}/p/aimlapi/v1/images/generations"
    return httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def served(sandbox: Any, data: bytes) -> str:
    """A URL the sandbox serves `data` at (a stand-in for the documented example's public image URLs)."""
    blob = sandbox.state.files.put(data, "image/png")
    return f"{sandbox.url}/_sandbox/files/{blob.id}.png"


@pytest.mark.parametrize("name", ["generate-request", "edit-request"])
def test_sandbox_answers_request_captures_with_documented_shape(sandbox: Any, name: str) -> None:
    body = dict(by_name(name).body)
    if "image_urls" in body:  # the docs' URLs are not reachable from here: the same shape, fetchable here
        body["image_urls"] = [served(sandbox, image_bytes(16 + i, 16)) for i in range(len(body["image_urls"]))]
    resp = post(sandbox, body)
    assert resp.status_code == 200, resp.text
    assert shape_problems(resp.json(), by_name("generate-response-url").body) == []
    data = resp.json()["data"][0]
    image = httpx.get(data["url"], timeout=30)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"


def test_sandbox_fetches_image_urls_as_aiml_does(sandbox: Any) -> None:
    body = {**by_name("edit-request").body, "image_urls": [f"{sandbox.url}/_sandbox/files/missing.png"]}
    resp = post(sandbox, body)
    assert resp.status_code == 400 and "image_urls[0]" in resp.json()["message"]
    assert shape_problems(resp.json(), by_name("error-400-validation").body) == []
    # the same image by URL and as a data URL is the same request: the same image comes back
    ref = image_bytes(20, 12)
    by_url = post(sandbox, {**body, "image_urls": [served(sandbox, ref)]}).json()["data"][0]["url"]
    inline = post(sandbox, {**body, "image_urls": [f"data:image/png;base64,{b64(ref)}"]}).json()["data"][0]["url"]
    assert httpx.get(by_url).content == httpx.get(inline).content


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


def test_adapter_against_sandbox_passes_a_large_reference_by_presigned_url(
        sandbox: Any, s3_bucket: tuple[str, str], s3_env: dict[str, str]) -> None:
    large = image_bytes(96, 64)
    ref = Reference(large, "image/png", hashlib.sha256(large).hexdigest())
    cfg = config("aimlapi", base_url=f"{sandbox.url}/p/aimlapi",
                 images={**PRESETS["aimlapi"]["images"], "max_inline_reference_bytes": len(large) - 1})
    storage = open_storage(f"s3://{s3_bucket[1]}/out", env=s3_env)
    with httpx.Client() as client:
        p = OpenAIImagesProvider(cfg, KEY, client, references=presigned_references(cfg, storage))
        by_url = p.generate(ImageRequest("a red mug, edited", "1K", "3:2", references=(ref,)), CallHooks())
        storage_bytes = storage.get(f"provider-references/{ref.sha256}.png")
    assert by_url.cost_usd == Decimal("0.10") and storage_bytes == large
    # the sandbox fetched the presigned URL: the same request with the reference inline gives the same image
    inline = post(sandbox, {"model": "google/nano-banana-pro-edit", "prompt": "a red mug, edited",
                            "aspect_ratio": "3:2", "resolution": "1K", "num_images": 1,
                            "image_urls": [f"data:image/png;base64,{b64(large)}"]})
    assert httpx.get(inline.json()["data"][0]["url"]).content == by_url.data
    ledger = sandbox.ledger()["by_provider"]["aimlapi"]
    assert ledger["billed_images"] == 2 and ledger["by_status"] == {"200": 2}
