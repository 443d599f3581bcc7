"""Image checks every adapter makes before it returns a result: a result is always a decodable image of
the requested size. Garbage, truncated data or a wrong size raise BadImage (a retryable provider fault).

Two size policies:
- exact (Gemini, Replicate: Google's renderer): width x height must equal SIZES[ratio][resolution].
- ratio (OpenAI-format resellers, Replicate): they may resize or re-encode the model's output (sizes
  rounded to multiples of 16/64, say), so the image is accepted when it decodes, its aspect ratio is within
  RATIO_TOLERANCE of the requested one and its long side within LONG_SIDE_TOLERANCE of the requested
  resolution's. Rejecting a slightly resized image would retry (and pay for) a good image again and again;
  accepting any size would accept a 1K image sold as 4K, or a thumbnail.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from typing import Literal

from PIL import Image, UnidentifiedImageError

from pipeline.errors import BadImage
from pipeline.providers.base import expected_size

SizePolicy = Literal["exact", "ratio"]
#: relative aspect-ratio difference accepted under the "ratio" policy
RATIO_TOLERANCE = 0.02
#: relative difference of the long side from the requested resolution's accepted under "ratio"
LONG_SIDE_TOLERANCE = 0.10


def decode_b64(data: str, *, provider: str = "") -> bytes:
    """Decode base64 strictly (standard or URL-safe alphabet, padding required). BadImage when invalid."""
    text = "".join(data.split())  # tolerate line breaks some proxies insert
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage("image data is not valid base64 (truncated?)", provider=provider) from None
    if not raw:
        raise BadImage("image data is empty", provider=provider)
    return raw


def image_mime(data: bytes) -> str | None:
    """The MIME type of the image in `data` from its bytes (not from what the provider declared)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return Image.MIME.get(img.format or "")
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def validate_image(
    data: bytes,
    mime_type: str,
    resolution: str,
    aspect_ratio: str,
    *,
    policy: SizePolicy = "exact",
    provider: str = "",
) -> tuple[int, int]:
    """Decode `data` fully with Pillow and check its size; return (width, height). Raises BadImage.
    `mime_type` is what the provider declared; it only has to name an image type (callers store the
    type read from the bytes, see image_mime)."""
    if mime_type and not mime_type.startswith("image/") and mime_type != "application/octet-stream":
        raise BadImage(f"answer is {mime_type}, not an image", provider=provider)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                width, height = img.size
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        raise BadImage(f"image does not decode: {type(e).__name__}", provider=provider) from None
    want_w, want_h = expected_size(aspect_ratio, resolution)
    if policy == "exact":
        if (width, height) != (want_w, want_h):
            raise BadImage(
                f"wrong size {width}x{height}, expected {want_w}x{want_h} for {aspect_ratio} {resolution}",
                provider=provider,
            )
    else:
        want, got = want_w / want_h, width / height
        if abs(got - want) / want > RATIO_TOLERANCE:
            raise BadImage(f"wrong aspect ratio {width}x{height}, expected {aspect_ratio}", provider=provider)
        want_long = max(want_w, want_h)
        if abs(max(width, height) - want_long) / want_long > LONG_SIDE_TOLERANCE:
            raise BadImage(
                f"wrong size {width}x{height} for {resolution} (expected about {want_w}x{want_h})",
                provider=provider,
            )
    return width, height
