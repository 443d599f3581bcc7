"""The protocol-neutral core: a normalized image request, its token usage, its price and its image.

Every protocol handler parses its wire format into a `GenRequest`, lets `SandboxState` decide faults and
limits, and turns the resulting `Generated` back into its own wire format. The same logical request
through any protocol hashes to the same fingerprint and so gets the same image bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from PIL import Image

from pipeline.money import usd
from pipeline.providers.base import IMAGE_TOKENS, SIZES
from pipeline.sandbox.faults import Fault
from pipeline.sandbox.render import render_image

#: prompt tokens an input image costs, as real usageMetadata reports it (PROVIDERS.md §1, §4)
INPUT_IMAGE_TOKENS = 258
MAX_REFERENCE_IMAGES = 14
MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Rates:
    """USD per million tokens (PROVIDERS.md §4, gemini-3-pro-image-preview)."""

    image_out: Decimal
    text_out: Decimal
    prompt: Decimal


STANDARD_RATES = Rates(image_out=Decimal(120), text_out=Decimal(12), prompt=Decimal(2))
BATCH_RATES = Rates(image_out=Decimal(60), text_out=Decimal(6), prompt=Decimal(1))


@dataclass(frozen=True)
class GenRequest:
    prompt: str
    aspect_ratio: str
    resolution: str
    mime_type: str = "image/png"
    #: one identity per reference image: sha256 of its bytes, or its URL when not fetched
    references: tuple[str, ...] = ()
    #: which of n images of one request (OpenAI n > 1)
    index: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return SIZES[self.aspect_ratio][self.resolution]

    @property
    def fingerprint(self) -> str:
        canon = json.dumps(
            [
                self.prompt,
                self.aspect_ratio,
                self.resolution,
                self.mime_type,
                list(self.references),
                self.index,
            ],
            separators=(",", ":"),
        )
        return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(frozen=True)
class Usage:
    text_tokens: int
    image_input_tokens: int
    image_tokens: int
    other_candidate_tokens: int
    thoughts_tokens: int

    @property
    def prompt_tokens(self) -> int:
        return self.text_tokens + self.image_input_tokens

    @property
    def candidates_tokens(self) -> int:
        return self.image_tokens + self.other_candidate_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.candidates_tokens + self.thoughts_tokens

    def cost(self, rates: Rates) -> Decimal:
        """Gemini's formula: IMAGE tokens at the image rate, other candidate and thought tokens at the text
        rate, prompt tokens at the input rate."""
        return usd(
            (
                self.image_tokens * rates.image_out
                + (self.other_candidate_tokens + self.thoughts_tokens) * rates.text_out
                + self.prompt_tokens * rates.prompt
            )
            / MILLION
        )

    def prompt_details(self) -> list[dict[str, Any]]:
        details: list[dict[str, Any]] = [{"modality": "TEXT", "tokenCount": self.text_tokens}]
        if self.image_input_tokens:
            details.append({"modality": "IMAGE", "tokenCount": self.image_input_tokens})
        return details

    def gemini_json(self) -> dict[str, Any]:
        """usageMetadata of a response that carries an image."""
        return {
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": self.candidates_tokens,
            "totalTokenCount": self.total_tokens,
            "promptTokensDetails": self.prompt_details(),
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": self.image_tokens}],
            "thoughtsTokenCount": self.thoughts_tokens,
        }


def blocked_cost(usage_metadata: dict[str, Any], rates: Rates) -> Decimal:
    """What a call that made no image is billed: prompt tokens at the input rate, candidate text and thinking
    tokens at the text rate (usageMetadata of a block or refusal has no IMAGE candidate tokens)."""
    prompt = int(usage_metadata.get("promptTokenCount", 0))
    text = int(usage_metadata.get("candidatesTokenCount", 0)) + int(usage_metadata.get("thoughtsTokenCount", 0))
    return usd((prompt * rates.prompt + text * rates.text_out) / MILLION)


def usage_for(request: GenRequest) -> Usage:
    """Token usage of a successful generation; the non-image parts vary deterministically per request."""
    h = int(request.fingerprint[12:20], 16)
    return Usage(
        text_tokens=max(1, math.ceil(len(request.prompt) / 4)),
        image_input_tokens=INPUT_IMAGE_TOKENS * len(request.references),
        image_tokens=IMAGE_TOKENS[request.resolution],
        other_candidate_tokens=h % 200,
        thoughts_tokens=150 + (h >> 8) % 600,
    )


@dataclass(frozen=True)
class Generated:
    """The result of one generation. `image` is None for blocks and refusals."""

    request: GenRequest
    fault: Fault | None
    usage: Usage
    image: bytes | None = None
    #: an interim "thought" image (Gemini), when asked for
    interim: bytes | None = None
    cost_usd: Decimal = Decimal(0)

    @property
    def billed(self) -> bool:
        return self.image is not None


def render_for(request: GenRequest, fault: Fault | None) -> bytes:
    """The image for a request; a wrong-size fault renders it at half size. Blocking: run in a thread."""
    width, height = request.size
    if fault is Fault.WRONG_SIZE:
        width, height = width // 2, height // 2
    return render_image((width, height), request.prompt, request.fingerprint, request.mime_type)


def render_interim(request: GenRequest) -> bytes:
    """A small interim thought image (a draft at a quarter of the size). Blocking: run in a thread."""
    width, height = request.size
    return render_image((width // 4, height // 4), "draft: " + request.prompt, request.fingerprint[::-1])


def truncated_b64(data: bytes) -> str:
    """Base64 of the first half of `data`, cut mid-quantum as a broken transfer would leave it."""
    text = base64.b64encode(data[: len(data) // 2]).decode()
    return text[: len(text) - 3]


def malformed_json(text: str) -> str:
    """A JSON body cut off in the middle."""
    return text[: max(1, len(text) // 2)]


def nearest_ratio(width: int, height: int) -> str:
    """The supported aspect ratio closest to width:height."""
    target = math.log(width / height)
    return min(SIZES, key=lambda r: abs(math.log(SIZES[r]["1K"][0] / SIZES[r]["1K"][1]) - target))


def nearest_resolution(aspect_ratio: str, width: int, height: int) -> str:
    """The resolution whose size for `aspect_ratio` has the long side closest to max(width, height)."""
    long_side = max(width, height)
    return min(SIZES[aspect_ratio], key=lambda res: abs(max(SIZES[aspect_ratio][res]) - long_side))


def image_ratio(data: bytes) -> str | None:
    """The nearest supported ratio of an encoded image (header only), or None when it does not decode."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:
        return None
    return nearest_ratio(width, height) if width > 0 and height > 0 else None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
