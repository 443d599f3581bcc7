"""Rendering: exact sizes, determinism, formats and the cost of a 4K PNG."""

from __future__ import annotations

import io
import time

from PIL import Image

from pipeline.sandbox.render import render_image

FP = "0123456789abcdef" * 4


def test_exact_size_and_format():
    for mime, fmt in (("image/png", "PNG"), ("image/jpeg", "JPEG"), ("image/webp", "WEBP")):
        data = render_image((300, 200), "hello", FP, mime)
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (300, 200) and img.format == fmt


def test_deterministic_and_colour_from_hash():
    assert render_image((64, 64), "a", FP) == render_image((64, 64), "a", FP)
    assert render_image((64, 64), "a", FP) != render_image((64, 64), "a", "f" * 64)


def test_4k_png_is_cheap():
    render_image((64, 64), "warm the font cache", FP)
    start = time.perf_counter()
    data = render_image((5504, 3072), "a long prompt " * 30, FP)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (5504, 3072)
