"""OpenAI's documented images API, both ways, through the generic `openai-images` kind (laozhang-openai's preset,
the default dialect): only fields OpenAI defines go out; documented answers parse to the right outcome; the
sandbox's OpenAI protocol answers the request captures with the documented shapes."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from pipeline.errors import ProviderError
from pipeline.providers.base import CallHooks, ImageRequest, Reference
from pipeline.providers.openai_images import OpenAIImagesProvider
from tests.providers.corpus import Capture, captures, shape_problems
from tests.providers.provider_wire import KEY, Recorder, assert_no_key, b64, config, image_bytes, sized

REQ = ImageRequest(prompt="a mug", resolution="1K", aspect_ratio="1:1")
REF = Reference(data=image_bytes(8, 8), mime_type="image/png", sha256="a")


def by_name(name: str) -> Capture:
    return next(c for c in captures("openai") if c.path.stem == name)


def answering(capture: Capture) -> Recorder:
    body = capture.body_with(IMAGE_B64=b64(sized("1:1", "1K")))
    return Recorder([httpx.Response(capture.status or 200, json=body, headers=capture.headers)])


def adapter(rec: Recorder) -> OpenAIImagesProvider:
    return OpenAIImagesProvider(config("laozhang-openai"), KEY, rec.client())


@pytest.mark.parametrize("capture", captures("openai", "response"), ids=lambda c: c.id)
def test_documented_answers(capture: Capture) -> None:
    want = capture.expect
    if want["outcome"] == "image":
        result = adapter(answering(capture)).generate(REQ, CallHooks())
        assert result.data == sized("1:1", "1K") and result.cost_source == want["cost_source"]
        return
    with pytest.raises(ProviderError) as info:
        adapter(answering(capture)).generate(REQ, CallHooks())
    assert_no_key(info.value)
    assert info.value.error_class == want["error_class"]
    if "retry_after_s" in want:
        assert info.value.retry_after_s == pytest.approx(want["retry_after_s"])


def test_generations_send_only_fields_openai_defines() -> None:
    rec = answering(by_name("images-response-b64"))
    adapter(rec).generate(REQ, CallHooks())
    documented = by_name("images-generate-request")
    sent = rec.requests[0]
    assert (sent.method, sent.url.path) == (documented.method, documented.route)
    body = json.loads(sent.content)
    assert set(body) <= set(documented.body), set(body) - set(documented.body)
    assert shape_problems(body, {k: documented.body[k] for k in body}, nullable=False) == []


def test_edits_send_image_array_parts_and_openai_fields() -> None:
    rec = answering(by_name("images-response-b64"))
    adapter(rec).generate(ImageRequest("a mug", "1K", "1:1", references=(REF, REF)), CallHooks())
    documented = by_name("images-edit-request")
    sent = rec.requests[0]
    assert (sent.method, sent.url.path) == (documented.method, documented.route)
    names = {n.decode() for n in re.findall(rb'form-data; name="([^"]+)"', sent.content)}
    assert names <= set(documented.body), names - set(documented.body)
    assert sent.content.count(b'name="image[]"') == 2


def test_sandbox_answers_with_the_documented_shape(sandbox: Any) -> None:
    body = by_name("images-generate-request").body
    resp = httpx.post(f"{sandbox.url}/v1/images/generations", json=body, headers={"Authorization": "Bearer k"},
                      timeout=30)
    assert resp.status_code == 200
    documented = by_name("images-response-b64").body
    assert shape_problems(resp.json(), documented) == []
    limited = httpx.post(f"{sandbox.url}/v1/images/generations", json={**body, "prompt": "x [sandbox:429]"},
                         headers={"Authorization": "Bearer k"}, timeout=30)
    assert limited.status_code == 429 and "retry-after-ms" in limited.headers
    assert shape_problems(limited.json(), by_name("error-429-headers").body) == []
