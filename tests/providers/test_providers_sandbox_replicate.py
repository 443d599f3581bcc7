"""ReplicateProvider against the real sandbox over loopback HTTP: Prefer: wait, polling by id, resume without
a second create, every error class, cost == the ledger."""

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
from pipeline.providers.base import SIZES, CallHooks, ImageRequest, Reference
from pipeline.providers.images import validate_image
from pipeline.providers.replicate import ReplicateProvider
from tests.providers.provider_wire import KEY, config, expect_error, image_bytes, sandbox_serves

PATH = "/v1/models/google/nano-banana-pro/predictions"


@pytest.fixture(scope="module", autouse=True)
def _served(sandbox_server: Any) -> None:
    if not sandbox_serves(sandbox_server.url, "POST", PATH):
        pytest.skip("the sandbox does not serve the Replicate protocol yet")


def rep(sandbox: Any, http: httpx.Client, name: str = "replicate", **over: Any) -> ReplicateProvider:
    return ReplicateProvider(
        config("replicate", base_url=f"{sandbox.url}/p/{name}", **over), KEY, http, poll_interval_s=0.2
    )


def ledger(sandbox: Any, account: str = "replicate") -> dict[str, Any]:
    return sandbox.ledger()["by_provider"].get(
        account, {"billed_images": 0, "billed_usd": "0", "generate_requests": 0}
    )


def billed(sandbox: Any, account: str = "replicate") -> tuple[int, Decimal]:
    acc = ledger(sandbox, account)
    return acc["billed_images"], Decimal(acc["billed_usd"])


def fail(p: ReplicateProvider, prompt: str, hooks: CallHooks | None = None) -> ProviderError:
    return expect_error(p, ImageRequest(prompt, "1K", "1:1"), hooks)


def test_success_saves_id_and_cost_equals_ledger(sandbox: Any, http: httpx.Client) -> None:
    saved: list[str] = []
    ref = Reference(data=image_bytes(32, 32), mime_type="image/png", sha256="r")
    req = ImageRequest("a mug on marble", "2K", "4:5", references=(ref,))
    result = rep(sandbox, http).generate(req, CallHooks(submitted=saved.append))
    assert saved == [result.remote_id] and result.remote_id
    assert validate_image(result.data, result.mime_type, "2K", "4:5") == SIZES["4:5"]["2K"]
    assert (result.cost_usd, result.cost_source) == (Decimal("0.036"), "price_table")
    assert billed(sandbox) == (1, Decimal("0.036"))


def test_hang_times_out_with_remote_id_then_resume_pays_once(sandbox: Any, http: httpx.Client) -> None:
    saved: list[str] = []
    req = ImageRequest("mug [sandbox:hang]", "1K", "1:1")
    with pytest.raises(ProviderTimeout) as info:
        rep(sandbox, http, timeout_s=1.0).generate(req, CallHooks(submitted=saved.append))
    err = info.value
    assert err.maybe_billed and err.remote_id and saved == [err.remote_id]
    result = rep(sandbox, http, timeout_s=10.0).resume(err.remote_id, req)
    assert result.remote_id == err.remote_id and result.data
    assert ledger(sandbox)["generate_requests"] == 1
    assert billed(sandbox) == (1, result.cost_usd)


@pytest.mark.parametrize(
    ("trigger", "cls"),
    [
        ("block-prompt", ContentBlocked),
        ("block-image", ContentBlocked),
        ("no-credit", QuotaExhausted),
        ("auth", AuthError),
        ("500", ProviderUnavailable),
        ("503", ProviderUnavailable),
    ],
)
def test_unbilled_faults(sandbox: Any, http: httpx.Client, trigger: str, cls: type) -> None:
    err = fail(rep(sandbox, http), f"mug [sandbox:{trigger}]")
    assert type(err) is cls and not err.maybe_billed
    assert billed(sandbox) == (0, Decimal(0))


def test_refusal(sandbox: Any, http: httpx.Client) -> None:
    err = fail(rep(sandbox, http), "mug [sandbox:refuse]")
    assert type(err) is ContentBlocked and err.message.startswith("no image: ") and not err.maybe_billed
    assert billed(sandbox) == (0, Decimal(0))


@pytest.mark.parametrize("trigger", ["429", "429-daily"])
def test_rate_limited(sandbox: Any, http: httpx.Client, trigger: str) -> None:
    err = fail(rep(sandbox, http), f"mug [sandbox:{trigger}]")
    assert type(err) is RateLimited and err.retry_after_s is not None and err.retry_after_s > 0


def test_real_rate_limit(sandbox: Any, http: httpx.Client) -> None:
    p = rep(sandbox, http, "replicate-tight")
    p.generate(ImageRequest("first", "1K", "1:1"))
    err = fail(p, "second")
    assert type(err) is RateLimited and err.retry_after_s is not None


@pytest.mark.parametrize("trigger", ["malformed", "truncated", "wrong-size"])
def test_billed_bad_outputs(sandbox: Any, http: httpx.Client, trigger: str) -> None:
    err = fail(rep(sandbox, http), f"mug [sandbox:{trigger}]")
    assert type(err) is BadImage and err.maybe_billed and err.remote_id is None
    assert billed(sandbox) == (1, err.cost_usd)


def test_wrong_key(sandbox: Any, http: httpx.Client) -> None:
    err = fail(rep(sandbox, http, "replicate-keyed"), "mug")
    assert type(err) is AuthError and err.http_status == 401
