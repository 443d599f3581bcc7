"""pricing, images, http helpers and the factory."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime

import httpx
import pytest

from pipeline.errors import BadImage, InputError, ProviderLevelError, ProviderTimeout, ProviderUnavailable
from pipeline.providers.factory import make_batch_client, make_provider
from pipeline.providers.gemini import GeminiProvider
from pipeline.providers.gemini_batch import GeminiBatchClient
from pipeline.providers.gemini_errors import next_reset, parse_duration_s
from pipeline.providers.http import (
    CONNECT_TIMEOUT_S,
    POOL_SIZE,
    decode_data_url,
    download,
    make_http_client,
    redact,
    retry_after_s,
    translate_transport_error,
)
from pipeline.providers.images import decode_b64, image_mime, validate_image
from pipeline.providers.kie import KieProvider
from pipeline.providers.openai_images import OpenAIImagesProvider
from pipeline.providers.pricing import (
    RATES,
    PricingError,
    cost_or_list,
    gemini_usage_cost,
    list_price,
    require_price,
    table_cost,
)
from pipeline.providers.replicate import ReplicateProvider
from tests.providers.provider_wire import KEY, USAGE, Recorder, config, image_bytes, sized

# --- pricing ------------------------------------------------------------------------------------------


def test_usage_cost_standard_and_batch_exact() -> None:
    assert gemini_usage_cost(USAGE, batch=False) == Decimal("0.151264")
    assert gemini_usage_cost(USAGE, batch=True) == Decimal("0.075632")
    assert RATES["batch"].image_output == Decimal("60") and RATES["standard"].input == Decimal("2")


def test_usage_cost_needs_an_image_detail() -> None:
    assert gemini_usage_cost(None, batch=False) is None
    assert gemini_usage_cost({}, batch=False) is None
    assert gemini_usage_cost({"candidatesTokenCount": 1120, "promptTokenCount": 5}, batch=False) is None


def test_usage_counts_as_strings_and_4k() -> None:
    usage = {
        "promptTokenCount": "10",
        "candidatesTokenCount": "2000",
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": "2000"}],
    }
    assert gemini_usage_cost(usage, batch=False) == Decimal("0.24002")


def test_table_cost_and_list_price() -> None:
    assert table_cost(config("google"), "4K", 2) == Decimal("0.2422")
    assert table_cost(config("kie"), "2K", 5) == Decimal("0.09")
    assert table_cost(config("kie", prices={"2K": "0.09"}), "4K", 0) is None
    assert list_price("2K") == Decimal("0.134") and list_price("4K") == Decimal("0.24")


def test_require_price() -> None:
    require_price(config("google", prices={}), "4K")  # priced from usage
    with pytest.raises(PricingError) as info:
        require_price(config("google", prices={}), "4K", usage_ok=False)
    assert isinstance(info.value, ProviderLevelError) and info.value.error_class == "unpriced"
    assert "providers.google.prices.4K" in info.value.message


def test_cost_or_list_sources() -> None:
    assert cost_or_list(config("google"), USAGE, "1K", 0, batch=False) == (Decimal("0.151264"), "usage")
    assert cost_or_list(config("laozhang"), USAGE, "1K", 0, batch=False) == (Decimal("0.05"), "price_table")
    assert cost_or_list(config("google", prices={}), {}, "1K", 1, batch=True) == (
        Decimal("0.0675500"),
        "list_estimate",
    )


# --- images -------------------------------------------------------------------------------------------


def test_decode_b64_strict() -> None:
    raw = bytes(range(256)) * 3
    assert decode_b64(base64.b64encode(raw).decode()) == raw
    assert decode_b64(base64.urlsafe_b64encode(raw).decode()) == raw
    text = base64.b64encode(raw).decode()
    assert decode_b64(text[:40] + "\n" + text[40:]) == raw
    for bad in (text[:-1], text[:-3] + "!!!", ""):
        with pytest.raises(BadImage):
            decode_b64(bad)


def test_validate_image_policies() -> None:
    assert validate_image(sized("9:16", "1K"), "image/png", "1K", "9:16") == (768, 1376)
    with pytest.raises(BadImage, match="wrong size"):
        validate_image(image_bytes(770, 1376), "image/png", "1K", "9:16")
    assert validate_image(image_bytes(768, 1360), "image/png", "1K", "9:16", policy="ratio") == (768, 1360)
    with pytest.raises(BadImage, match="aspect ratio"):
        validate_image(image_bytes(768, 1200), "image/png", "1K", "9:16", policy="ratio")
    with pytest.raises(BadImage, match="wrong size"):
        validate_image(image_bytes(384, 688), "image/png", "1K", "9:16", policy="ratio")
    with pytest.raises(BadImage, match="not an image"):
        validate_image(sized(), "text/html", "1K", "1:1")
    with pytest.raises(BadImage, match="does not decode"):
        validate_image(sized()[:-200], "image/png", "1K", "1:1")


def test_image_mime_from_bytes() -> None:
    assert image_mime(image_bytes(4, 4, "JPEG")) == "image/jpeg"
    assert image_mime(image_bytes(4, 4, "WEBP")) == "image/webp"
    assert image_mime(b"nope") is None


# --- http ---------------------------------------------------------------------------------------------


def test_http_client_limits() -> None:
    with make_http_client(42.0) as c:
        assert c.timeout.read == 42.0 and c.timeout.connect == CONNECT_TIMEOUT_S
        assert not c.follow_redirects
        pool = c._transport._pool  # type: ignore[attr-defined]
        assert pool._max_connections == POOL_SIZE


@pytest.mark.parametrize(
    ("exc", "cls", "billed"),
    [
        (httpx.ConnectError("refused"), ProviderUnavailable, False),
        (httpx.ConnectTimeout("slow connect"), ProviderUnavailable, False),
        (httpx.PoolTimeout("pool"), ProviderUnavailable, False),
        (httpx.WriteError("broken pipe"), ProviderUnavailable, False),
        (httpx.ReadTimeout("slow"), ProviderTimeout, True),
        (httpx.ReadError("reset"), ProviderTimeout, True),
        (httpx.RemoteProtocolError("closed"), ProviderTimeout, True),
    ],
)
def test_translate_transport_error(exc: httpx.HTTPError, cls: type, billed: bool) -> None:
    err = translate_transport_error(exc, "p")
    assert type(err) is cls and err.maybe_billed is billed and err.provider == "p" and err.retryable


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, 0, 0, 0)
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "-3"}) == 0.0
    date = format_datetime(datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC), usegmt=True)
    assert retry_after_s({"retry-after": date}, now) == 60.0
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None


def test_gemini_duration_and_reset_helpers() -> None:
    assert parse_duration_s("45.837906927s") == 45.837906927 and parse_duration_s("500ms") == 0.5
    assert parse_duration_s("x") is None and parse_duration_s(None) is None
    assert next_reset(datetime(2026, 1, 1, 7, 59), 8) == datetime(2026, 1, 1, 8, 0)
    assert next_reset(datetime(2026, 1, 1, 8, 0), 8) == datetime(2026, 1, 2, 8, 0)


def test_redact_and_data_urls() -> None:
    assert redact(f"key={KEY}!", KEY) == "key=***!" and redact("x", None) == "x"
    assert decode_data_url("data:image/png;base64,aGk=") == (b"hi", "image/png")
    assert decode_data_url("https://x") is None


def test_download_limits() -> None:
    big = Recorder([httpx.Response(200, content=b"x" * 2000)])
    with pytest.raises(ProviderUnavailable, match="too large"):
        download(big.client(), "https://cdn.test/a", provider="p", max_bytes=1000)
    with pytest.raises(ProviderUnavailable, match="HTTP 410"):
        download(Recorder([httpx.Response(410)]).client(), "https://cdn.test/a", provider="p")
    with pytest.raises(ProviderUnavailable, match="not http"):
        download(big.client(), "file:///etc/passwd", provider="p")
    ok = Recorder([httpx.Response(200, content=b"img", headers={"content-type": "image/png"})])
    assert download(ok.client(), "https://cdn.test/a", provider="p")[:2] == (b"img", "image/png")


# --- factory ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "cls"),
    [
        ("google", GeminiProvider),
        ("google-batch", GeminiProvider),
        ("laozhang", GeminiProvider),
        ("sandbox", GeminiProvider),
        ("kie", KieProvider),
        ("laozhang-openai", OpenAIImagesProvider),
        ("aimlapi", OpenAIImagesProvider),
        ("replicate", ReplicateProvider),
    ],
)
def test_factory_kinds(preset: str, cls: type) -> None:
    with httpx.Client() as c:
        p = make_provider(config(preset), api_key=KEY, client=c, region=None)
        assert type(p) is cls and p.name == preset and KEY not in repr(p)


def test_factory_sandbox_uses_key_header_and_usage() -> None:
    with httpx.Client() as c:
        p = make_provider(config("sandbox", auth="bearer"), api_key=KEY, client=c, region=None)
        assert isinstance(p, GeminiProvider) and p.config.auth == "header" and p.config.cost_from_usage


def test_factory_errors_and_batch_client() -> None:
    with httpx.Client() as c:
        with pytest.raises(InputError, match="base_url"):
            make_provider(config("sandbox", base_url=None), api_key=None, client=c, region=None)
        with pytest.raises(InputError, match="owner/name"):
            make_provider(config("replicate", model="nano"), api_key=None, client=c, region=None)
        assert isinstance(make_batch_client(config("google-batch"), api_key=KEY, client=c), GeminiBatchClient)


def test_only_task_apis_are_resumable() -> None:
    from pipeline.providers.base import ResumableProvider

    with httpx.Client() as c:
        kinds = {n: make_provider(config(n), api_key=None, client=c)
                 for n in ("google", "laozhang-openai", "kie", "replicate")}
        assert {n: isinstance(p, ResumableProvider) for n, p in kinds.items()} == {
            "google": False,
            "laozhang-openai": False,
            "kie": True,
            "replicate": True,
        }
