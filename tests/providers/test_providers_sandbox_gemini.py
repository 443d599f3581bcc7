"""GeminiProvider against the real sandbox over loopback HTTP: every error class, and cost == the ledger."""

from __future__ import annotations

import socket
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.errors import (
    AuthError,
    BadImage,
    ContentBlocked,
    DailyQuotaExceeded,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from pipeline.providers.base import SIZES, CallHooks, ImageRequest, Reference
from pipeline.providers.gemini import GeminiProvider
from pipeline.providers.images import validate_image
from tests.providers.provider_wire import KEY, config, expect_error, image_bytes


def gem(
    sandbox: Any, http: httpx.Client, preset: str = "sandbox", name: str | None = None, **over: Any
) -> GeminiProvider:
    base = sandbox.url + (f"/p/{name}" if name else "")
    return GeminiProvider(config(preset, base_url=base, **over), KEY, http)


def billed(sandbox: Any, account: str = "gemini") -> tuple[int, Decimal]:
    acc = sandbox.ledger()["by_provider"].get(account, {"billed_images": 0, "billed_usd": "0"})
    return acc["billed_images"], Decimal(acc["billed_usd"])


def fail(p: GeminiProvider, prompt: str, **req: Any) -> ProviderError:
    return expect_error(p, ImageRequest(prompt, req.get("resolution", "1K"), req.get("aspect_ratio", "1:1")))


def test_success_cost_from_usage_equals_ledger(sandbox: Any, http: httpx.Client) -> None:
    ref = Reference(data=image_bytes(64, 64), mime_type="image/png", sha256="r")
    req = ImageRequest("a ceramic mug on marble [sandbox:interim]", "2K", "16:9", references=(ref, ref))
    result = gem(sandbox, http).generate(req, CallHooks())
    assert result.cost_source == "usage"
    assert validate_image(result.data, result.mime_type, "2K", "16:9") == SIZES["16:9"]["2K"]
    assert billed(sandbox) == (1, result.cost_usd)
    assert result.usage["promptTokensDetails"][-1] == {"modality": "IMAGE", "tokenCount": 516}


def test_reseller_flat_price_equals_ledger(sandbox: Any, http: httpx.Client) -> None:
    result = gem(sandbox, http, "laozhang", name="laozhang").generate(ImageRequest("mug", "1K", "3:4"))
    assert (result.cost_usd, result.cost_source) == (Decimal("0.05"), "price_table")
    assert billed(sandbox, "laozhang") == (1, Decimal("0.05"))


@pytest.mark.parametrize(
    ("trigger", "text"),
    [
        ("block-prompt", "prompt blocked: "),
        ("block-image", "image blocked: IMAGE_SAFETY: Unable to show the generated image."),
        ("refuse", "no image: model answered with text: "),
    ],
)
def test_blocked_calls_cost_their_prompt_and_thinking_tokens(
    sandbox: Any, http: httpx.Client, trigger: str, text: str
) -> None:
    """Google bills the tokens an HTTP-200 answer reports, except the image it did not make (billing FAQ; see
    pipeline.providers.gemini_answer): the adapter's cost equals what the sandbox billed, and no image."""
    err = fail(gem(sandbox, http), f"mug [sandbox:{trigger}]")
    assert type(err) is ContentBlocked and text in err.message and not err.maybe_billed
    assert err.cost_usd is not None and Decimal(0) < err.cost_usd < Decimal("0.02")
    assert billed(sandbox) == (0, err.cost_usd)


@pytest.mark.parametrize(
    ("trigger", "cls", "text"),
    [
        ("auth", AuthError, "API key not valid"),
        ("500", ProviderUnavailable, "HTTP 500 INTERNAL"),
        ("503", ProviderUnavailable, "HTTP 503 UNAVAILABLE: The model is overloaded."),
    ],
)
def test_unbilled_faults(sandbox: Any, http: httpx.Client, trigger: str, cls: type, text: str) -> None:
    err = fail(gem(sandbox, http), f"mug [sandbox:{trigger}]")
    assert type(err) is cls and text in err.message
    assert not err.maybe_billed and err.cost_usd is None
    assert billed(sandbox) == (0, Decimal(0))


def test_429_rate_limited_from_retry_info(sandbox: Any, http: httpx.Client) -> None:
    err = fail(gem(sandbox, http), "mug [sandbox:429]")
    assert type(err) is RateLimited and err.http_status == 429
    assert err.retry_after_s is not None and f"retry in {err.retry_after_s:g}s" in err.message


def test_real_rate_limit(sandbox: Any, http: httpx.Client) -> None:
    p = gem(sandbox, http, name="gemini-tight")
    p.generate(ImageRequest("first", "1K", "1:1"))
    err = fail(p, "second")
    assert type(err) is RateLimited and err.retry_after_s is not None and 0 < err.retry_after_s <= 60


@pytest.mark.parametrize("trigger", ["429-daily", "no-credit"])
def test_daily_quota(sandbox: Any, http: httpx.Client, trigger: str) -> None:
    err = fail(gem(sandbox, http), f"mug [sandbox:{trigger}]")
    assert type(err) is DailyQuotaExceeded and err.until is not None


@pytest.mark.parametrize(
    ("trigger", "cls", "error_class"),
    [
        ("malformed", ProviderUnavailable, "malformed"),
        ("truncated", BadImage, "bad_image"),
        ("wrong-size", BadImage, "bad_image"),
    ],
)
def test_billed_faults(sandbox: Any, http: httpx.Client, trigger: str, cls: type, error_class: str) -> None:
    err = fail(gem(sandbox, http), f"mug [sandbox:{trigger}]")
    assert type(err) is cls and err.error_class == error_class and err.retryable and err.maybe_billed
    images, usd = billed(sandbox)
    assert images == 1
    if cls is BadImage:  # the usage arrived with the bad image: its cost is known and matches the bill
        assert err.cost_usd == usd


def test_hang_past_timeout_is_maybe_billed_timeout(sandbox: Any, http: httpx.Client) -> None:
    err = fail(gem(sandbox, http, timeout_s=1.0), "mug [sandbox:hang]")
    assert type(err) is ProviderTimeout and err.maybe_billed and err.retryable


def test_retry_after_transient_fault_succeeds(sandbox: Any, http: httpx.Client) -> None:
    p = gem(sandbox, http)
    for _ in range(2):
        assert type(fail(p, "mug [sandbox:503x2]")) is ProviderUnavailable
    assert p.generate(ImageRequest("mug [sandbox:503x2]", "1K", "1:1")).data
    assert billed(sandbox)[0] == 1


def test_wrong_key_is_auth_error_without_the_key(sandbox: Any, http: httpx.Client) -> None:
    err = fail(gem(sandbox, http, name="gemini-keyed"), "mug")
    assert type(err) is AuthError and err.http_status == 400


def test_connection_refused_is_unbilled_unavailable(http: httpx.Client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = GeminiProvider(config("sandbox", base_url=f"http://127.0.0.1:{port}"), KEY, http)
    err = fail(p, "mug")
    assert type(err) is ProviderUnavailable and not err.maybe_billed
