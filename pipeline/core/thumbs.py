"""Thumbnails made at store time: a small JPEG beside each cached image, for reports and galleries.

A thumbnail lives under `_thumbs/<cache_key>.jpg`, keyed like the cache object, so every item answered from
the cache shares its owner's thumbnail. Making one is a convenience: any failure (an image Pillow cannot
read, the store refusing the put) is logged and the item goes on without a thumbnail.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

from PIL import Image

from pipeline.storage.base import Storage

log = logging.getLogger("pipeline.thumbs")

#: longest side of a thumbnail, in pixels
THUMB_MAX_PX = 256
#: JPEG quality of thumbnails
THUMB_QUALITY = 80
#: largest source image we decode for a thumbnail (pixels); a 4K image is about 17 million
MAX_SOURCE_PIXELS = 40_000_000


def thumb_key(cache_key: str) -> str:
    """Where the thumbnail of a cache entry lives."""
    return f"_thumbs/{cache_key}.jpg"


def make_thumbnail(data: bytes, max_px: int = THUMB_MAX_PX, quality: int = THUMB_QUALITY) -> bytes:
    """A JPEG no larger than `max_px` on its longest side. Raises ValueError when `data` is not an image
    Pillow can read (or is larger than MAX_SOURCE_PIXELS)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_SOURCE_PIXELS:
                raise ValueError(f"image too large for a thumbnail ({im.width}x{im.height})")
            im.draft("RGB", (max_px, max_px))  # JPEG sources decode at a reduced scale
            small = im.convert("RGBA") if im.mode in ("P", "LA", "PA") else im.copy()
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"not a readable image: {e}") from None
    small.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    if small.mode != "RGB":
        background = Image.new("RGB", small.size, (255, 255, 255))
        if small.mode == "RGBA":
            background.paste(small, mask=small.getchannel("A"))
        else:
            background.paste(small.convert("RGB"))
        small = background
    out = io.BytesIO()
    small.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def store_thumbnail(storage: Storage, cache_key: str, data: bytes) -> str | None:
    """Make and store the thumbnail of a freshly generated image. Returns its key, or None on any failure."""
    key = thumb_key(cache_key)
    try:
        storage.put(key, make_thumbnail(data), "image/jpeg", {"cache-key": cache_key})
    except Exception as e:  # a thumbnail never fails an item: whatever went wrong, log it and go on
        log.warning("thumbnail for %s not stored: %s: %s", cache_key[:12], type(e).__name__, e)
        return None
    return key


def ensure_thumbnail(storage: Storage, cache_key: str, load_source: Callable[[], bytes]) -> str | None:
    """The shared thumbnail of a cache entry, for an item answered from the cache: the existing one, or one
    made now from the cached image (its owner may predate thumbnails or have failed to make one)."""
    key = thumb_key(cache_key)
    try:
        if storage.exists(key):
            return key
        storage.put(key, make_thumbnail(load_source()), "image/jpeg", {"cache-key": cache_key})
    except Exception as e:  # as above: never fail an item for its thumbnail
        log.warning("thumbnail for %s not available: %s: %s", cache_key[:12], type(e).__name__, e)
        return None
    return key
