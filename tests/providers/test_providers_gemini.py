"""GeminiProvider against captured Gemini bodies served by httpx.MockTransport (PROVIDERS.md §1-2)."""

from __future__ import annotations

import base64
from datetime import datetime
from decimal import Decimal

import httpx
import pytest

from pipeline.errors import (
    AuthError,
    BadImage,
    ContentBlocked,
    DailyQuotaExceeded,
    InvalidRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pipeline.providers.base import CallHooks, ImageRequest, Reference
from pipeline.providers.gemini import GeminiProvider
from pipeline.providers.pricing import PricingError
from tests.providers.provider_wire import (
    GEMINI_500,
    GEMINI_503,
    GEMINI_BAD_FIELD,
    GEMINI_IMAGE_SAFETY,
    GEMINI_KEY_INVALID,
    GEMINI_PROMPT_BLOCKED,
    GEMINI_TEXT_ONLY,
    KEY,
    Recorder,
    b64,
    config,
    expect_error,
    gemini_429,
    gemini_ok,
    image_bytes,
    respond,
    sized,
)

NOW = datetime(2026, 3, 1, 12, 30)
REQ = ImageRequest(prompt="a ceramic mug", resolution="1K", aspect_ratio="1:1", key="item-1")


def provider(rec: Recorder, preset: str = "google", **over: object) -> GeminiProvider:
    return GeminiProvider(config(preset, **over), KEY, rec.client(), clock=lambda: NOW)


def fail(rec: Recorder, request: ImageRequest = REQ, preset: str = "google") -> ProviderError:
    return expect_error(provider(rec, preset), request)


def test_success_usage_cost_and_wire_request() -> None:
    rec = Recorder([respond(200, gemini_ok(sized(fmt="JPEG")))])
    ref = Reference(data=image_bytes(8, 8), mime_type="image/png", sha256="x")
    req = ImageRequest(prompt="mug", resolution="1K", aspect_ratio="1:1", references=(ref, ref))
    result = provider(rec).generate(req, CallHooks())
    # 1120 image tok x $120/M + (652 other + 748 thinking) x $12/M + 32 prompt x $2/M
    assert result.cost_usd == Decimal("0.1344") + Decimal("0.0168") + Decimal("0.000064")
    assert result.cost_source == "usage"
    assert result.mime_type == "image/jpeg"
    assert result.remote_id == "DOd6afWPNZfjjrEPpZ3c0AM"
    sent = rec.requests[0]
    assert sent.url == "https://provider.test/v1beta/models/gemini-3-pro-image-preview:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY and "authorization" not in sent.headers
    body = rec.json_body()
    gen = body["generationConfig"]
    assert gen["responseModalities"] == ["TEXT", "IMAGE"]
    assert gen["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K"}
    parts = body["contents"][0]["parts"]
    assert parts[0] == {"text": "mug"}
    assert [p["inlineData"]["mimeType"] for p in parts[1:]] == ["image/png", "image/png"]
    assert base64.b64decode(parts[1]["inlineData"]["data"]) == ref.data


def test_final_image_is_last_non_thought_inline_part() -> None:
    thought_img = {"inlineData": {"mimeType": "image/png", "data": b64(image_bytes(10, 10))}, "thought": True}
    final = sized("16:9", "2K")
    body = gemini_ok(
        final, "image/png", extra_parts=[{"text": "**Contemplating**", "thought": True}, thought_img]
    )
    body["candidates"][0]["content"]["parts"].append(
        thought_img
    )  # an interim image after it is still a thought
    rec = Recorder([respond(200, body)])
    result = provider(rec).generate(ImageRequest("p", "2K", "16:9"), CallHooks())
    assert result.data == final and result.mime_type == "image/png"


def test_mime_type_read_from_bytes_when_declared_wrong() -> None:
    rec = Recorder([respond(200, gemini_ok(sized(fmt="JPEG"), "image/png"))])
    assert provider(rec).generate(REQ).mime_type == "image/jpeg"


def test_laozhang_bearer_auth_and_flat_table_price() -> None:
    rec = Recorder([respond(200, gemini_ok(sized()))])
    result = provider(rec, "laozhang").generate(REQ, CallHooks())
    assert rec.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert "x-goog-api-key" not in rec.requests[0].headers
    assert (result.cost_usd, result.cost_source) == (Decimal("0.05"), "price_table")


def test_no_usage_falls_back_to_table_with_input_images() -> None:
    rec = Recorder([respond(200, gemini_ok(sized(resolution="4K"), usage=None))])
    ref = Reference(data=b"x", mime_type="image/png", sha256="x")
    req = ImageRequest("p", "4K", "1:1", references=(ref,) * 3)
    result = provider(rec).generate(req, CallHooks())
    assert (result.cost_usd, result.cost_source) == (Decimal("0.24") + 3 * Decimal("0.0011"), "price_table")


def test_unpriced_resolution_raises_before_any_request() -> None:
    rec = Recorder([respond(200, gemini_ok(sized()))])
    p = GeminiProvider(config("laozhang", prices={"2K": "0.05"}), KEY, rec.client())
    with pytest.raises(PricingError) as info:
        p.generate(REQ, CallHooks())
    assert "prices.1K" in info.value.message and rec.requests == []


def test_region_picks_regional_base_url() -> None:
    rec = Recorder([respond(200, gemini_ok(sized()))])
    cfg = config("google", regions={"EU": "https://eu.provider.test/"})
    GeminiProvider(cfg, KEY, rec.client(), region="EU").generate(REQ, CallHooks())
    assert str(rec.requests[0].url).startswith("https://eu.provider.test/v1beta/models/")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (gemini_429("45.837906927s"), 45.837906927),
        (gemini_429("47s"), 47.0),
        (gemini_429(None, message_tail="Please retry in 26.66s."), 26.66),
        (gemini_429(None), None),
    ],
)
def test_429_rate_limited_with_provider_delay(body: dict[str, object], expected: float | None) -> None:
    err = fail(Recorder([respond(429, body)]))
    assert type(err) is RateLimited and err.retryable
    assert err.retry_after_s == expected and err.http_status == 429 and not err.maybe_billed


@pytest.mark.parametrize(
    "body",
    [
        gemini_429("30s", quota_id="GenerateRequestsPerDayPerProjectPerModel"),
        gemini_429("30s", quota_value="0"),
    ],
)
def test_429_daily_quota_parks_until_reset(body: dict[str, object]) -> None:
    err = fail(Recorder([respond(429, body)]))
    assert isinstance(err, DailyQuotaExceeded)
    assert err.until == datetime(2026, 3, 2, 8, 0)  # next 08:00 UTC after 12:30
    assert err.retry_after_s == (err.until - NOW).total_seconds()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, GEMINI_500),
        (502, None),
        (503, GEMINI_503),
        (504, None),
    ],
)
def test_5xx_unavailable(status: int, body: object) -> None:
    rec = Recorder([respond(status, body) if body else respond(status, text="<html>Bad Gateway</html>")])
    err = fail(rec)
    assert type(err) is ProviderUnavailable and err.retryable and err.http_status == status
    assert not err.maybe_billed


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, GEMINI_KEY_INVALID),
        (401, {"error": {"code": 401, "message": "unauthenticated", "status": "UNAUTHENTICATED"}}),
        (403, {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}),
    ],
)
def test_auth_errors(status: int, body: object) -> None:
    err = fail(Recorder([respond(status, body)]))
    assert isinstance(err, AuthError) and err.http_status == status


def test_402_quota_exhausted() -> None:
    err = fail(Recorder([respond(402, {"error": {"message": "insufficient balance"}})]), preset="laozhang")
    assert isinstance(err, QuotaExhausted)


def test_other_400_invalid_request_with_message() -> None:
    err = fail(Recorder([respond(400, GEMINI_BAD_FIELD)]))
    assert type(err) is InvalidRequest and not err.retryable
    assert 'Unknown name "foo"' in err.message


def test_prompt_blocked() -> None:
    err = fail(Recorder([respond(200, GEMINI_PROMPT_BLOCKED)]))
    assert type(err) is ContentBlocked and not err.retryable
    assert err.message == "prompt blocked: PROHIBITED_CONTENT"


def test_image_blocked_reason_and_first_sentence() -> None:
    err = fail(Recorder([respond(200, GEMINI_IMAGE_SAFETY)]))
    assert type(err) is ContentBlocked
    assert err.message == "image blocked: IMAGE_SAFETY: Unable to show the generated image."
    assert not err.maybe_billed


@pytest.mark.parametrize(
    "reason",
    [
        "IMAGE_PROHIBITED_CONTENT",
        "NO_IMAGE",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
        "SAFETY",
        "PROHIBITED_CONTENT",
    ],
)
def test_other_block_reasons(reason: str) -> None:
    body = {"candidates": [{"content": {}, "finishReason": reason, "index": 0}]}
    assert fail(Recorder([respond(200, body)])).message == f"image blocked: {reason}"


def test_text_only_stop_is_a_refusal() -> None:
    err = fail(Recorder([respond(200, GEMINI_TEXT_ONLY)]))
    assert type(err) is ContentBlocked
    assert err.message.startswith("no image: model answered with text: I can't create images")
    assert "Considering" not in err.message


def test_malformed_json_on_200() -> None:
    err = fail(Recorder([respond(200, text='{"candidates": [{"content": ')]))
    assert type(err) is ProviderUnavailable and err.error_class == "malformed" and err.retryable


def test_200_without_candidates_is_malformed() -> None:
    err = fail(Recorder([respond(200, {"usageMetadata": {}})]))
    assert err.error_class == "malformed"


def test_truncated_base64_is_bad_image_and_billed() -> None:
    body = gemini_ok(sized())
    data = body["candidates"][0]["content"]["parts"][0]["inlineData"]["data"]
    body["candidates"][0]["content"]["parts"][0]["inlineData"]["data"] = data[: len(data) // 2 + 1]
    err = fail(Recorder([respond(200, body)]))
    assert type(err) is BadImage and err.retryable and err.maybe_billed
    assert err.cost_usd == Decimal("0.151264")


def test_truncated_image_on_a_base64_boundary_is_bad_image() -> None:
    png = sized()
    err = fail(Recorder([respond(200, gemini_ok(png[: (len(png) // 2) // 3 * 3]))]))
    assert type(err) is BadImage and "decode" in err.message


def test_wrong_size_is_bad_image() -> None:
    err = fail(Recorder([respond(200, gemini_ok(image_bytes(512, 512)))]))
    assert type(err) is BadImage and "512x512" in err.message and "1024x1024" in err.message


def test_garbage_bytes_are_bad_image() -> None:
    err = fail(Recorder([respond(200, gemini_ok(b"this is not an image at all"))]))
    assert type(err) is BadImage


def test_connect_error_not_billed() -> None:
    err = fail(Recorder([httpx.ConnectError("Connection refused")]))
    assert type(err) is ProviderUnavailable and not err.maybe_billed and err.retryable


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
    ],
)
def test_read_timeout_or_disconnect_maybe_billed(exc: Exception) -> None:
    err = fail(Recorder([exc]))
    assert isinstance(err, ProviderTimeout) and err.maybe_billed and err.retryable


def test_key_echoed_by_provider_is_redacted() -> None:
    body = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": f"bad request for key {KEY}"}}
    err = fail(Recorder([respond(400, body)]))
    assert "***" in err.message


def test_repr_of_provider_hides_key() -> None:
    p = provider(Recorder([respond(200, {})]))
    assert KEY not in repr(p) and KEY not in str(vars(p).get("url"))
