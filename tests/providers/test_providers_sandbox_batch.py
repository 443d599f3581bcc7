"""GeminiBatchClient against the real sandbox over loopback HTTP: create (inline and file), poll, results
item by item, cancel, list/find, and cost == the sandbox ledger at batch prices."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.errors import BadImage, ContentBlocked, ProviderError, ProviderUnavailable, RateLimited
from pipeline.providers.base import SIZES, ImageRequest, ImageResult
from pipeline.providers.gemini_batch import BatchState, BatchStatus, GeminiBatchClient
from pipeline.providers.images import validate_image
from tests.providers.provider_wire import KEY, assert_no_key, config, sandbox_serves


@pytest.fixture(scope="module", autouse=True)
def _served(sandbox_server: Any) -> None:
    if not sandbox_serves(sandbox_server.url, "GET", "/v1beta/batches"):
        pytest.skip("the sandbox does not serve the Gemini Batch API yet")


def batch_client(sandbox: Any, http: httpx.Client, **kw: Any) -> GeminiBatchClient:
    return GeminiBatchClient(config("google-batch", base_url=sandbox.url), KEY, http, **kw)


def wait_done(c: GeminiBatchClient, name: str, timeout_s: float = 15.0) -> BatchStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = c.get(name)
        if status.done:
            return status
        assert time.monotonic() < deadline, f"batch not done: {status.state}"
        time.sleep(0.1)


def billed_usd(sandbox: Any) -> tuple[int, Decimal]:
    ledger = sandbox.ledger()
    return ledger["billed_images"], Decimal(ledger["billed_usd"])


REQUESTS = {
    "ok-1": ImageRequest("a red mug", "1K", "1:1"),
    "ok-2": ImageRequest("a blue vase", "2K", "16:9"),
    "blocked": ImageRequest("a thing [sandbox:block-image]", "1K", "1:1"),
    "prompt": ImageRequest("a thing [sandbox:block-prompt]", "1K", "1:1"),
    "refused": ImageRequest("a thing [sandbox:refuse]", "1K", "1:1"),
    "limited": ImageRequest("a thing [sandbox:429]", "1K", "1:1"),
    "broken": ImageRequest("a thing [sandbox:truncated]", "1K", "1:1"),
    "small": ImageRequest("a thing [sandbox:wrong-size]", "1K", "4:3"),
}


def check(sandbox: Any, results: dict[str, ImageResult | ProviderError]) -> None:
    assert set(results) == set(REQUESTS)
    ok = [results["ok-1"], results["ok-2"]]
    assert all(isinstance(r, ImageResult) and r.cost_source == "usage" for r in ok)
    r2 = results["ok-2"]
    assert isinstance(r2, ImageResult)
    assert validate_image(r2.data, r2.mime_type, "2K", "16:9") == SIZES["16:9"]["2K"]
    for key in ("blocked", "prompt", "refused"):
        assert type(results[key]) is ContentBlocked, key
    assert results["blocked"].message.startswith("image blocked: IMAGE_SAFETY")  # type: ignore[union-attr]
    assert results["prompt"].message.startswith("prompt blocked: ")  # type: ignore[union-attr]
    assert type(results["limited"]) is RateLimited
    bad = [results["broken"], results["small"]]
    assert all(type(r) is BadImage and r.maybe_billed for r in bad)
    for r in results.values():
        if isinstance(r, ProviderError):
            assert_no_key(r)
    # what we account (images, bad images and the tokens of blocked calls) equals the sandbox's bill
    blocked = [results[k] for k in ("blocked", "prompt", "refused")]
    assert all(r.cost_usd is not None and r.cost_usd > 0 for r in blocked)  # type: ignore[union-attr]
    ours = sum((r.cost_usd for r in ok), Decimal(0)) + sum(
        (r.cost_usd or Decimal(0) for r in bad + blocked), Decimal(0)
    )
    assert billed_usd(sandbox) == (4, ours)


@pytest.mark.parametrize("mode", ["inline", "file"])
def test_batch_round_trip(sandbox: Any, http: httpx.Client, mode: str) -> None:
    c = batch_client(sandbox, http, **({"inline_max_bytes": 10} if mode == "file" else {}))
    handle = c.create(f"run-{mode}", list(REQUESTS.items()))
    assert handle.mode == mode and handle.name.startswith("batches/")
    status = wait_done(c, handle.name)
    assert status.state is BatchState.SUCCEEDED and status.request_count == len(REQUESTS)
    check(sandbox, c.results(status, REQUESTS))


def test_batch_failed_as_a_whole(sandbox: Any, http: httpx.Client) -> None:
    c = batch_client(sandbox, http)
    handle = c.create("run [sandbox:batch-failed]", list(REQUESTS.items())[:2])
    status = wait_done(c, handle.name)
    assert status.state is BatchState.FAILED
    results = c.results(status, dict(list(REQUESTS.items())[:2]))
    assert all(
        isinstance(r, ProviderUnavailable) and r.error_class == "batch_failed" for r in results.values()
    )


def test_create_fault_is_classified(sandbox: Any, http: httpx.Client) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        batch_client(sandbox, http).create("run [sandbox:503]", list(REQUESTS.items())[:1])
    assert info.value.http_status == 503
    assert_no_key(info.value)


def test_cancel_list_and_find(sandbox: Any, http: httpx.Client) -> None:
    c = batch_client(sandbox, http)
    name = f"unclear-{time.monotonic_ns()}"
    handle = c.create(name, list(REQUESTS.items())[:1])
    found = c.find_by_display_name(name)
    assert found is not None and found.name == handle.name
    assert c.find_by_display_name("no such batch") is None
    assert handle.name in {s.name for s in c.list(page_size=1)}
    c.cancel(handle.name)
    status = wait_done(c, handle.name)
    assert status.state in (BatchState.CANCELLED, BatchState.SUCCEEDED)
