"""Whole jobs in the documented dialects, against the sandbox over HTTP: AIML's JSON dialect with references (data
URLs), Google's Flex tier shedding and failing over to the standard tier, Replicate with a reference uploaded
through its files API. Billed images equal succeeded items and the report's cost equals the sandbox's bill; an
AIML reference too large to send inline is refused at validate time, before anything is written."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from pipeline import services
from pipeline.clock import utcnow
from pipeline.config import load_settings
from pipeline.errors import InputError
from pipeline.presets import AIML_MAX_INLINE_REFERENCE_BYTES
from pipeline.runtime import open_runtime
from pipeline.sandbox.server import SandboxServer, start_sandbox

AIML_PRICES = {"1K": "0.10", "2K": "0.10", "4K": "0.15"}
REPLICATE_PRICES = {"1K": "0.036", "2K": "0.036", "4K": "0.05"}


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.02, "max_s": 0.05}}}, "providers": {
        "aimlapi": {"protocol": "aimlapi", "price_per_image": AIML_PRICES},
        "replicate": {"protocol": "replicate", "price_per_image": REPLICATE_PRICES},
        "flex": {"protocol": "gemini"},
        "standard": {"protocol": "gemini"},
    }})
    try:
        yield server
    finally:
        server.stop()


def _settings(tmp: Path, sandbox: SandboxServer, providers: dict[str, Any]) -> Any:
    cfg = {"database_url": f"sqlite:///{tmp / 'db.sqlite'}", "storage_url": f"file://{tmp / 'out'}",
           "providers": providers, "worker": {"max_attempts": 4, "backoff_base_s": 0.05, "backoff_cap_s": 0.2}}
    (tmp / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    return load_settings(tmp / "pipeline.yaml", env={"AIMLAPI_API_KEY": "k", "REPLICATE_API_TOKEN": "r",
                                                      "GEMINI_API_KEY": "g"})


def _png(tmp: Path, name: str, side: int, noise: bool = False) -> str:
    img = (Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)) if noise
           else Image.new("RGB", (side, side), (10, 120, 200)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    (tmp / name).write_bytes(buf.getvalue())
    return name


def _manifest(tmp: Path, items: list[dict[str, Any]], **top: Any) -> Path:
    doc = {"job": "dialects", "prompt": "Photo of {{ title }}", "defaults": {"resolution": "1K", "aspect_ratio": "1:1"},
           "items": items, **top}
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(settings: Any, manifest: Path) -> Any:
    loaded = services.load(manifest, settings)
    rt = open_runtime(settings)
    try:
        return services.process_here(rt, services.submit(rt, loaded, utcnow()).job_id, concurrency=4)
    finally:
        rt.close()


def test_aimlapi_job_with_references(tmp_path: Path, sandbox: SandboxServer) -> None:
    ref = _png(tmp_path, "ref.png", 64)
    settings = _settings(tmp_path, sandbox, {"aimlapi": {"base_url": f"{sandbox.url}/p/aimlapi"}})
    items = [{"id": f"i{i}", "title": f"mug {i}", **({"references": [ref]} if i % 2 else {})} for i in range(4)]
    summary = _run(settings, _manifest(tmp_path, items, providers=["aimlapi"]))
    assert summary.counts["succeeded"] == 4
    account = sandbox.ledger()["by_provider"]["aimlapi"]
    assert account["billed_images"] == 4 and account["by_status"] == {"200": 4}
    assert Decimal(account["billed_usd"]) == summary.totals.cost_usd == Decimal("0.40")


def test_aimlapi_refuses_a_reference_too_large_to_inline_at_validate(tmp_path: Path, sandbox: SandboxServer) -> None:
    side = 1400  # noise does not compress: about 5.9 MB of PNG
    ref = _png(tmp_path, "big.png", side, noise=True)
    assert (tmp_path / ref).stat().st_size > AIML_MAX_INLINE_REFERENCE_BYTES
    settings = _settings(tmp_path, sandbox, {"aimlapi": {"base_url": f"{sandbox.url}/p/aimlapi"}})
    with pytest.raises(InputError) as info:
        services.load(_manifest(tmp_path, [{"id": "a", "title": "x", "references": [ref]}], providers=["aimlapi"]),
                      settings)
    assert "aimlapi" in str(info.value) and "data URL" in str(info.value)
    assert sandbox.ledger()["requests"] == 0


def test_flex_sheds_then_fails_over_to_standard(tmp_path: Path, sandbox: SandboxServer) -> None:
    common = {"kind": "gemini", "api_key_env": "GEMINI_API_KEY", "cost_from_usage": True, "data_policy": "official"}
    settings = _settings(tmp_path, sandbox, {
        "flex": {**common, "service_tier": "flex", "base_url": f"{sandbox.url}/p/flex",
                 "prices": {"1K": "0.067", "2K": "0.067", "4K": "0.12"}},
        "standard": {**common, "base_url": f"{sandbox.url}/p/standard",
                     "prices": {"1K": "0.134", "2K": "0.134", "4K": "0.24"}},
    })
    items = [{"id": f"i{i}", "title": f"vase {i}" + (" [sandbox:shedx1]" if i < 2 else "")} for i in range(4)]
    summary = _run(settings, _manifest(tmp_path, items, providers=["flex", "standard"]))
    assert summary.counts["succeeded"] == 4
    by = sandbox.ledger()["by_provider"]
    assert by["flex"]["by_status"].get("429") == 2  # the two shed calls
    assert by["flex"]["billed_images"] + by["standard"]["billed_images"] == 4
    billed = Decimal(by["flex"]["billed_usd"]) + Decimal(by["standard"]["billed_usd"])
    assert billed == summary.totals.cost_usd


def test_replicate_job_uploads_a_large_reference(tmp_path: Path, sandbox: SandboxServer) -> None:
    ref = _png(tmp_path, "big.png", 400, noise=True)  # > 256 KB: through the files API
    settings = _settings(tmp_path, sandbox, {"replicate": {"base_url": f"{sandbox.url}/p/replicate"}})
    summary = _run(settings, _manifest(tmp_path, [{"id": "a", "title": "lamp", "references": [ref]}],
                                       providers=["replicate"]))
    assert summary.counts["succeeded"] == 1
    account = sandbox.ledger()["by_provider"]["replicate"]
    assert account["by_status"]["201"] == 2 and account["billed_images"] == 1  # upload + prediction
    assert Decimal(account["billed_usd"]) == summary.totals.cost_usd
