"""Request builders and decoders shared by the sandbox tests."""

from __future__ import annotations

import base64
import io
from decimal import Decimal
from typing import Any

from PIL import Image

MODEL = "gemini-3-pro-image-preview"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"


def png(width: int = 64, height: int = 64, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def gemini_body(
    prompt: str, ratio: str | None = "1:1", size: str | None = "1K", refs: list[bytes] | None = None
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": prompt}]
    for ref in refs or []:
        parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(ref).decode()}})
    image_config = {k: v for k, v in (("aspectRatio", ratio), ("imageSize", size)) if v is not None}
    return {
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": image_config},
    }


def final_image(body: dict[str, Any]) -> tuple[bytes, str]:
    """The last non-thought inlineData part (PROVIDERS.md §1 parsing rule): bytes and MIME type."""
    images = [
        p["inlineData"]
        for p in body["candidates"][0]["content"]["parts"]
        if "inlineData" in p and not p.get("thought")
    ]
    assert images, body
    return base64.b64decode(images[-1]["data"]), images[-1]["mimeType"]


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.size


def gemini_cost(usage: dict[str, Any], batch: bool = False) -> Decimal:
    """PROVIDERS.md §4 from a usageMetadata dict."""
    image = sum(d["tokenCount"] for d in usage.get("candidatesTokensDetails", []) if d["modality"] == "IMAGE")
    other = usage.get("candidatesTokenCount", 0) - image + usage.get("thoughtsTokenCount", 0)
    rates = (Decimal(60), Decimal(6), Decimal(1)) if batch else (Decimal(120), Decimal(12), Decimal(2))
    return (image * rates[0] + other * rates[1] + usage["promptTokenCount"] * rates[2]) / Decimal(1_000_000)
