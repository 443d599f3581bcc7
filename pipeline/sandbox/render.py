"""Cheap, real, deterministic images: flat colours from the request hash with the prompt drawn on them.

Drawn as a three-colour palette image: PNGs are written as palette PNGs (one byte a pixel, compress_level=1),
about 0.1 s for 4K and 0.05 s for 2K, and decode fast for the client; JPEG and WebP are converted to RGB.
Run it in a worker thread, not on the event loop.
"""

from __future__ import annotations

import io
import textwrap
import threading

from PIL import Image, ImageDraw, ImageFont

#: output formats by MIME type, with their Pillow names and save options
FORMATS: dict[str, tuple[str, dict[str, int]]] = {
    "image/png": ("PNG", {"compress_level": 1}),
    "image/jpeg": ("JPEG", {"quality": 85}),
    "image/webp": ("WEBP", {"quality": 80, "method": 0}),
}
#: most prompt lines drawn
MAX_LINES = 24
#: palette indexes of the three colours
_BG, _ACCENT, _INK = 0, 1, 2

_fonts = threading.local()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The bundled font at `size`, one cache per thread (FreeType faces are not thread safe)."""
    cache: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] | None = getattr(_fonts, "cache", None)
    if cache is None:
        cache = _fonts.cache = {}
    font = cache.get(size)
    if font is None:
        font = cache[size] = ImageFont.load_default(size=size)
    return font


def colours(fingerprint: str) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]:
    """Background, accent and text colour derived from a hex request hash."""
    raw = bytes.fromhex(fingerprint[:12])
    bg = (raw[0], raw[1], raw[2])
    accent = (raw[3], raw[4], raw[5])
    luma = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    ink = (0, 0, 0) if luma > 140 else (255, 255, 255)
    return bg, accent, ink


def render_image(size: tuple[int, int], text: str, fingerprint: str, mime_type: str = "image/png") -> bytes:
    """An image of exactly `size` (width, height) showing `text`; same arguments give the same bytes."""
    width, height = size
    bg, accent, ink = colours(fingerprint)
    img = Image.new("P", size, _BG)
    img.putpalette([*bg, *accent, *ink])
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, height * 3 // 4, width, height), fill=_ACCENT)
    border = max(2, min(width, height) // 150)
    draw.rectangle((0, 0, width - 1, height - 1), outline=_INK, width=border)
    font_px = max(10, min(width, height) // 28)
    font = _font(font_px)
    chars_per_line = max(8, int(width * 0.9 / (font_px * 0.55)))
    lines = textwrap.wrap(text, width=chars_per_line)[:MAX_LINES] or [""]
    x, y = width // 20, height // 12
    for line in lines:
        draw.text((x, y), line, fill=_INK, font=font)
        y += int(font_px * 1.3)
    label = f"sandbox {width}x{height} {fingerprint[:12]}"
    draw.text((x, height - int(font_px * 1.8)), label, fill=_INK, font=font)
    pil_format, options = FORMATS.get(mime_type, FORMATS["image/png"])
    out = io.BytesIO()
    (img if pil_format == "PNG" else img.convert("RGB")).save(out, pil_format, **options)
    return out.getvalue()
