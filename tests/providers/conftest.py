"""Fixtures for the provider tests: one real sandbox over loopback HTTP for the session, reset per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pipeline.providers.http import make_http_client

#: short hang so "[sandbox:hang]" outlasts a 1 s client timeout without slowing the suite
HANG_S = 2.5
#: flat prices the sandbox bills for the named resellers; the pipeline presets use the same numbers
RESELLER_PRICES = {
    "laozhang": {"1K": "0.05", "2K": "0.05", "4K": "0.08"},
    "laozhang-openai": {"1K": "0.05", "2K": "0.05", "4K": "0.08"},
    "kie": {"1K": "0.09", "2K": "0.09", "4K": "0.12"},
    "aimlapi": {"1K": "0.10", "2K": "0.10", "4K": "0.15"},
    "replicate": {"1K": "0.036", "2K": "0.036", "4K": "0.05"},
}
PROTOCOL = {
    "laozhang": "gemini",
    "laozhang-openai": "openai",
    "kie": "kie",
    "aimlapi": "aimlapi",
    "replicate": "replicate",
}
#: laozhang.ai as its docs describe it: an HTTP 200 without an image billed as a call, a spent balance answered
#: 429 "... preConsumedQuota [...] is not enough" (tests/providers/captures/laozhang)
LAOZHANG: dict[str, dict[str, Any]] = {"laozhang": {"bill_empty_answers": True, "no_credit": "insufficient_user_quota"}}
PROFILE: dict[str, Any] = {
    "seed": 3,
    "batch_delay_s": 0.3,
    "protocols": {p: {"hang_s": HANG_S} for p in ("gemini", "gemini-batch", "openai", "replicate", "kie")},
    "providers": {
        name: {"protocol": PROTOCOL[name], "price_per_image": prices, "hang_s": HANG_S} | LAOZHANG.get(name, {})
        for name, prices in RESELLER_PRICES.items()
    }
    | {
        # one request a minute: the second one gets the provider's real 429
        "gemini-tight": {"protocol": "gemini", "rpm": 1, "bucket_s": 1.0},
        "openai-tight": {"protocol": "openai", "rpm": 1, "bucket_s": 1.0},
        "replicate-tight": {"protocol": "replicate", "rpm": 1, "bucket_s": 1.0},
        "kie-tight": {"protocol": "kie", "rpm": 1, "bucket_s": 1.0},
        # Kie's errors inside HTTP 200 envelopes, as public clients see them
        "kie-200": {"protocol": "kie", "error_status": "200", "price_per_image": RESELLER_PRICES["kie"],
                    "hang_s": HANG_S},
        # Gemini-format resellers that put the image in a text part: a data URL, or a markdown link
        "reseller-dataurl": {"protocol": "gemini", "image_in": "text-data-url",
                             "price_per_image": RESELLER_PRICES["laozhang"]},
        "reseller-link": {"protocol": "gemini", "image_in": "text-url", "price_per_image": RESELLER_PRICES["laozhang"]},
        # a model that refuses the Flex tier (a 400 naming the service tier)
        "gemini-noflex": {"protocol": "gemini", "flex": False},
        # only KEYED_KEY is accepted
        "gemini-keyed": {"protocol": "gemini", "api_keys": ["the-right-key"]},
        "openai-keyed": {"protocol": "openai", "api_keys": ["the-right-key"]},
        "replicate-keyed": {"protocol": "replicate", "api_keys": ["the-right-key"]},
        "kie-keyed": {"protocol": "kie", "api_keys": ["the-right-key"]},
    },
}


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Any]:
    try:
        from pipeline.sandbox.server import start_sandbox
    except ImportError as e:  # pragma: no cover - only while the sandbox is being written
        pytest.skip(f"pipeline.sandbox.server not available: {e}")
    server = start_sandbox(profile=PROFILE, port=0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sandbox(sandbox_server: Any) -> Any:
    sandbox_server.reset()
    return sandbox_server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    client = make_http_client(30.0)
    try:
        yield client
    finally:
        client.close()
