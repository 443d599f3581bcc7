"""OpenAIImagesProvider against captured OpenAI-format bodies on httpx.MockTransport (PROVIDERS.md §5)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime

import httpx
import pytest

from pipeline.errors import (
    AuthError,
    BadImage,
    ContentBlocked,
    InvalidRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pipeline.providers.base import CallHooks, ImageRequest, Reference
from pipeline.providers.openai_images import OpenAIImagesProvider
from pipeline.providers.pricing import PricingError
from tests.providers.provider_wire import (
    KEY,
    Recorder,
    b64,
    config,
    expect_error,
    image_bytes,
    respond,
    sized,
)

NOW = datetime(2026, 3, 1, 12, 0, 0)
REQ = ImageRequest(prompt="a mug", resolution="1K", aspect_ratio="16:9")
USAGE = {"input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210}


def images_ok(data: bytes | None = None, *, url: str | None = None) -> dict[str, object]:
    item: dict[str, object] = {
        "b64_json": b64(data) if data is not None else None,
        "url": url,
        "revised_prompt": None,
    }
    return {"created": 1758000000, "output_format": "png", "size": "1376x768", "data": [item], "usage": USAGE}


def oai_error(code: str | None, message: str, etype: str = "invalid_request_error", **extra: object) -> dict:
    return {"error": {"message": message, "type": etype, "param": None, "code": code, **extra}}


def provider(rec: Recorder, preset: str = "laozhang-openai", **over: object) -> OpenAIImagesProvider:
    return OpenAIImagesProvider(config(preset, **over), KEY, rec.client(), clock=lambda: NOW)


def fail(rec: Recorder, request: ImageRequest = REQ, preset: str = "laozhang-openai") -> ProviderError:
    return expect_error(provider(rec, preset), request)


def test_generations_b64_wire_and_flat_price() -> None:
    rec = Recorder([respond(200, images_ok(sized("16:9")))])
    result = provider(rec).generate(REQ, CallHooks())
    assert (result.cost_usd, result.cost_source) == (Decimal("0.05"), "price_table")
    assert result.mime_type == "image/png" and result.usage == USAGE
    sent = rec.requests[0]
    assert sent.url == "https://provider.test/v1/images/generations"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert rec.json_body() == {
        "model": "gemini-3-pro-image-preview",
        "prompt": "a mug",
        "n": 1,
        "size": "1376x768",
        "response_format": "b64_json",
        "output_format": "png",
    }


def test_base_url_already_ending_in_v1() -> None:
    rec = Recorder([respond(200, images_ok(sized("16:9")))])
    OpenAIImagesProvider(config("laozhang-openai", base_url="https://x.test/v1/"), KEY, rec.client()).generate(REQ)
    assert rec.requests[0].url == "https://x.test/v1/images/generations"


def test_url_answer_is_downloaded_at_once_without_the_key() -> None:
    png = sized("16:9")

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.test":
            return httpx.Response(200, content=png, headers={"content-type": "image/png"})
        return respond(200, images_ok(url="https://cdn.test/out/1.png"))

    rec = Recorder([answer])
    result = provider(rec, "laozhang-openai", response_format="url").generate(REQ, CallHooks())
    assert result.data == png and result.cost_usd == Decimal("0.05")
    assert rec.json_body(0)["response_format"] == "url"
    assert "authorization" not in rec.requests[1].headers


def test_data_url_answer() -> None:
    png = sized("16:9")
    rec = Recorder([respond(200, images_ok(url=f"data:image/png;base64,{b64(png)}"))])
    assert provider(rec).generate(REQ).data == png


def test_edits_multipart_with_image_array() -> None:
    ref1 = Reference(data=image_bytes(8, 8), mime_type="image/png", sha256="a")
    ref2 = Reference(data=image_bytes(9, 9, "JPEG"), mime_type="image/jpeg", sha256="b")
    rec = Recorder([respond(200, images_ok(sized("16:9")))])
    req = ImageRequest("a mug", "1K", "16:9", references=(ref1, ref2))
    result = provider(rec).generate(req, CallHooks())
    assert result.cost_usd == Decimal("0.05")  # no input_image price: resellers bill flat
    sent = rec.requests[0]
    assert sent.url == "https://provider.test/v1/images/edits"
    assert sent.headers["content-type"].startswith("multipart/form-data")
    body = sent.content
    assert body.count(b'name="image[]"') == 2
    assert b'filename="reference-0.png"' in body and b'filename="reference-1.jpg"' in body
    assert ref1.data in body and ref2.data in body
    assert b'name="model"\r\n\r\ngemini-3-pro-image-preview' in body
    assert b'name="size"\r\n\r\n1376x768' in body and b'name="aspect_ratio"' not in body


def test_generic_dialect_refuses_4k_before_sending() -> None:
    rec = Recorder([respond(200, images_ok(sized("16:9", "4K")))])
    err = fail(rec, ImageRequest("a mug", "4K", "16:9"))
    assert isinstance(err, InvalidRequest) and "4K" in err.message and not rec.requests


@pytest.mark.parametrize(
    ("size", "ok"),
    [
        ((1376, 768), True),
        ((1344, 752), True),  # resized by a reseller: accepted
        ((688, 384), False),  # half size
        ((1024, 1024), False),  # wrong ratio
    ],
)
def test_size_policy_ratio_and_resolution(size: tuple[int, int], ok: bool) -> None:
    rec = Recorder([respond(200, images_ok(image_bytes(*size)))])
    if ok:
        assert provider(rec).generate(REQ).data
    else:
        err = fail(rec)
        assert isinstance(err, BadImage) and err.maybe_billed and err.cost_usd == Decimal("0.05")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": format_datetime(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC), usegmt=True)}, 30.0),
        ({}, None),
    ],
)
def test_429_rate_limited_with_headers(headers: dict[str, str], expected: float | None) -> None:
    body = oai_error("rate_limit_exceeded", "Rate limit reached for images per minute", "requests")
    err = fail(Recorder([respond(429, body, headers=headers)]))
    assert type(err) is RateLimited and err.retry_after_s == expected and err.http_status == 429


def test_429_insufficient_quota_pauses_provider() -> None:
    body = oai_error("insufficient_quota", "You exceeded your current quota", "insufficient_quota")
    err = fail(Recorder([respond(429, body)]))
    assert type(err) is QuotaExhausted


@pytest.mark.parametrize("code", ["moderation_blocked", "content_policy_violation"])
def test_moderation_is_terminal_block(code: str) -> None:
    body = oai_error(
        code,
        "Your request was rejected by the safety system.",
        "image_generation_user_error",
        moderation_details={"moderation_stage": "input", "categories": ["harassment"]},
    )
    err = fail(Recorder([respond(400, body)]))
    assert type(err) is ContentBlocked and not err.retryable
    assert (
        err.message
        == "moderation blocked (input): Your request was rejected by the safety system. [harassment]"
    )


def test_other_400_invalid_request() -> None:
    err = fail(Recorder([respond(400, oai_error("invalid_size", "size must be one of ..."))]))
    assert type(err) is InvalidRequest and "size must be one of" in err.message


@pytest.mark.parametrize("status", [401, 403])
def test_auth(status: int) -> None:
    err = fail(
        Recorder([respond(status, oai_error("invalid_api_key", f"Incorrect API key provided: {KEY}"))])
    )
    assert type(err) is AuthError and "***" in err.message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, oai_error(None, "The server had an error", "server_error")),
        (503, oai_error(None, "overloaded", "server_error")),
        (
            500,
            {
                "error": {
                    "message": "litellm.InternalServerError: ... 503 ... UNAVAILABLE",
                    "type": None,
                    "param": None,
                    "code": "500",
                }
            },
        ),
        (
            200,
            {
                "error": {
                    "message": "litellm.ServiceUnavailableError",
                    "type": None,
                    "param": None,
                    "code": "503",
                }
            },
        ),
    ],
)
def test_unavailable_including_litellm_string_codes(status: int, body: dict) -> None:
    err = fail(Recorder([respond(status, body)]))
    assert type(err) is ProviderUnavailable and err.retryable and (err.http_status or 0) >= 500


def test_empty_data_is_a_refusal() -> None:
    err = fail(Recorder([respond(200, {"created": 1, "data": []})]))
    assert type(err) is ContentBlocked and err.message.startswith("no image")


def test_malformed_200() -> None:
    err = fail(Recorder([respond(200, text='{"created": 17, "data": [{"b64_')]))
    assert type(err) is ProviderUnavailable and err.error_class == "malformed" and err.maybe_billed


def test_truncated_b64_is_billed_bad_image() -> None:
    data = b64(sized("16:9"))
    err = fail(Recorder([respond(200, {"data": [{"b64_json": data[: len(data) // 2 - 3]}]})]))
    assert type(err) is BadImage and err.maybe_billed and err.cost_usd == Decimal("0.05")


def test_failed_download_is_billed_unavailable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.test":
            return httpx.Response(404, text="gone")
        return respond(200, images_ok(url="https://cdn.test/x.png"))

    err = fail(Recorder([answer]))
    assert type(err) is ProviderUnavailable and err.error_class == "download"
    assert err.maybe_billed and err.cost_usd == Decimal("0.05")


def test_transport_errors() -> None:
    err = fail(Recorder([httpx.ConnectError("refused")]))
    assert type(err) is ProviderUnavailable and not err.maybe_billed
    err = fail(Recorder([httpx.ReadTimeout("slow")]))
    assert type(err) is ProviderTimeout and err.maybe_billed


def test_unpriced_raises_before_call() -> None:
    rec = Recorder([respond(200, images_ok(sized("16:9")))])
    with pytest.raises(PricingError):
        provider(rec, prices={}, cost_from_usage=True).generate(REQ)
    assert rec.requests == []
