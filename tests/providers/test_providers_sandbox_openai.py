"""OpenAIImagesProvider against the real sandbox over loopback HTTP: every error class, cost == the ledger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.errors import (
    AuthError,
    BadImage,
    ContentBlocked,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pipeline.providers.base import SIZES, ImageRequest, Reference
from pipeline.providers.images import validate_image
from pipeline.providers.openai_images import OpenAIImagesProvider
from tests.providers.provider_wire import KEY, config, expect_error, image_bytes, sandbox_serves


@pytest.fixture(scope="module", autouse=True)
def _served(sandbox_server: Any) -> None:
    if not sandbox_serves(sandbox_server.url, "POST", "/v1/images/generations"):
        pytest.skip("the sandbox does not serve the OpenAI images protocol yet")


def oai(
    sandbox: Any, http: httpx.Client, name: str = "laozhang-openai", preset: str = "laozhang-openai", **over: Any
) -> OpenAIImagesProvider:
    return OpenAIImagesProvider(config(preset, base_url=f"{sandbox.url}/p/{name}", **over), KEY, http)


def billed(sandbox: Any, account: str = "laozhang-openai") -> tuple[int, Decimal]:
    acc = sandbox.ledger()["by_provider"].get(account, {"billed_images": 0, "billed_usd": "0"})
    return acc["billed_images"], Decimal(acc["billed_usd"])


def fail(p: OpenAIImagesProvider, prompt: str) -> ProviderError:
    return expect_error(p, ImageRequest(prompt, "1K", "1:1"))


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_generations_cost_equals_ledger(sandbox: Any, http: httpx.Client, response_format: str) -> None:
    result = oai(sandbox, http, response_format=response_format).generate(ImageRequest("a mug", "2K", "3:2"))
    assert validate_image(result.data, result.mime_type, "2K", "3:2") == SIZES["3:2"]["2K"]
    assert (result.cost_usd, result.cost_source) == (Decimal("0.05"), "price_table")
    assert billed(sandbox) == (1, Decimal("0.05"))


def test_edits_with_references(sandbox: Any, http: httpx.Client) -> None:
    ref = Reference(data=image_bytes(32, 32), mime_type="image/png", sha256="r")
    p = oai(sandbox, http, "laozhang-openai", "laozhang-openai")
    result = p.generate(ImageRequest("the same mug, blue", "1K", "9:16", references=(ref, ref)))
    assert result.cost_usd == Decimal("0.05") and billed(sandbox, "laozhang-openai") == (1, Decimal("0.05"))


@pytest.mark.parametrize(
    ("trigger", "cls", "text"),
    [
        ("block-prompt", ContentBlocked, "moderation blocked (input)"),
        ("block-image", ContentBlocked, "moderation blocked (output)"),
        ("refuse", ContentBlocked, "no image"),
        ("no-credit", QuotaExhausted, ""),
        ("auth", AuthError, ""),
        ("500", ProviderUnavailable, "HTTP 500"),
        ("503", ProviderUnavailable, "HTTP 503"),
    ],
)
def test_unbilled_faults(sandbox: Any, http: httpx.Client, trigger: str, cls: type, text: str) -> None:
    err = fail(oai(sandbox, http), f"mug [sandbox:{trigger}]")
    assert type(err) is cls and text in err.message and not err.maybe_billed
    assert billed(sandbox) == (0, Decimal(0))


@pytest.mark.parametrize("trigger", ["429", "429-daily"])
def test_rate_limited_with_retry_after(sandbox: Any, http: httpx.Client, trigger: str) -> None:
    err = fail(oai(sandbox, http), f"mug [sandbox:{trigger}]")
    assert type(err) is RateLimited and err.retry_after_s is not None and err.retry_after_s > 0


def test_real_rate_limit(sandbox: Any, http: httpx.Client) -> None:
    p = oai(sandbox, http, "openai-tight", prices={"1K": "0.09"})
    p.generate(ImageRequest("first", "1K", "1:1"))
    err = fail(p, "second")
    assert type(err) is RateLimited and err.retry_after_s is not None


@pytest.mark.parametrize(
    ("trigger", "cls"),
    [
        ("malformed", ProviderUnavailable),
        ("truncated", BadImage),
        ("wrong-size", BadImage),
    ],
)
def test_billed_faults(sandbox: Any, http: httpx.Client, trigger: str, cls: type) -> None:
    err = fail(oai(sandbox, http), f"mug [sandbox:{trigger}]")
    assert type(err) is cls and err.retryable and err.maybe_billed
    images, usd = billed(sandbox)
    assert images == 1
    if cls is BadImage:
        assert err.cost_usd == usd


def test_hang_past_timeout(sandbox: Any, http: httpx.Client) -> None:
    err = fail(oai(sandbox, http, timeout_s=1.0), "mug [sandbox:hang]")
    assert type(err) is ProviderTimeout and err.maybe_billed


def test_wrong_key(sandbox: Any, http: httpx.Client) -> None:
    err = fail(oai(sandbox, http, "openai-keyed"), "mug")
    assert type(err) is AuthError and err.http_status == 401
