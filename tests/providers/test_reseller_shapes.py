"""Gemini-format resellers answer with the image as inlineData, as a data URL in a text part, or as an https link
(a markdown image) in text. All three are accepted; links are downloaded at once, size-capped, and a link to
another host passes the output guard (the reference address rules) first."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.errors import ContentBlocked, ProviderUnavailable
from pipeline.providers.base import CallHooks, ImageRequest
from pipeline.providers.gemini import GeminiProvider
from pipeline.providers.gemini_answer import image_in_text
from pipeline.references import ReferenceFetcher
from tests.providers.provider_wire import KEY, Recorder, assert_no_key, b64, config, sized

REQ = ImageRequest(prompt="a mug", resolution="1K", aspect_ratio="1:1")
PNG = sized("1:1", "1K")


def answer_with(part: dict[str, Any]) -> dict[str, Any]:
    return {"candidates": [{"content": {"parts": [part], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "modelVersion": "gemini-3-pro-image-preview"}


def reseller(rec: Recorder, **kw: Any) -> GeminiProvider:
    return GeminiProvider(config("laozhang"), KEY, rec.client(), **kw)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("![image](https://cdn.example.com/a/b.png)", "https://cdn.example.com/a/b.png"),
        ("Here it is: ![](https://cdn.example.com/x.jpg) enjoy", "https://cdn.example.com/x.jpg"),
        ("  https://cdn.example.com/only.png \n", "https://cdn.example.com/only.png"),
        ("data:image/png;base64,iVBORw0KGgo=", "data:image/png;base64,iVBORw0KGgo="),
        ("I can't draw that. See https://policies.google.com/terms for why.", None),
        ("plain refusal", None),
    ],
)
def test_image_in_text(text: str, found: str | None) -> None:
    assert image_in_text(text) == found


def test_data_url_in_text() -> None:
    rec = Recorder([httpx.Response(200, json=answer_with({"text": f"data:image/png;base64,{b64(PNG)}"}))])
    assert reseller(rec).generate(REQ, CallHooks()).data == PNG


def test_markdown_link_is_downloaded_at_once_without_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "provider.test":
            return httpx.Response(200, json=answer_with({"text": "![image](https://cdn.example.com/o/1.png)"}))
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    rec = Recorder([handler])
    result = reseller(rec).generate(REQ, CallHooks())
    assert result.data == PNG and result.cost_source == "price_table"
    download = rec.requests[1]
    assert download.url.host == "cdn.example.com" and "authorization" not in download.headers


def test_link_to_a_private_address_is_refused_by_the_guard() -> None:
    link = answer_with({"text": "![image](https://169.254.169.254/latest/meta-data.png)"})
    rec = Recorder([httpx.Response(200, json=link)])
    guard = ReferenceFetcher(allow_http=True).check_url
    with pytest.raises(ProviderUnavailable) as info:
        reseller(rec, output_guard=guard).generate(REQ, CallHooks())
    err = info.value
    assert err.error_class == "download" and "refused" in err.message and err.maybe_billed
    assert len(rec.requests) == 1  # nothing was fetched
    assert_no_key(err)


def test_text_with_an_ordinary_link_is_still_a_refusal() -> None:
    text = "I can't draw that. See https://policies.google.com/terms for why."
    rec = Recorder([httpx.Response(200, json=answer_with({"text": text}))])
    with pytest.raises(ContentBlocked):
        reseller(rec).generate(REQ, CallHooks())


@pytest.mark.parametrize("name", ["reseller-dataurl", "reseller-link"])
def test_sandbox_reseller_shapes(sandbox: Any, name: str) -> None:
    with httpx.Client() as http:
        p = GeminiProvider(config("laozhang", base_url=f"{sandbox.url}/p/{name}"), KEY, http,
                           output_guard=ReferenceFetcher().check_url)  # the sandbox's own host is trusted
        result = p.generate(ImageRequest("a mug", "1K", "3:4"))
    account = sandbox.ledger()["by_provider"][name]
    assert account["billed_images"] == 1 and Decimal(account["billed_usd"]) == result.cost_usd == Decimal("0.05")
