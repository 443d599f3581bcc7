"""pipeline.storage.keys.sanitize_key: the one rule for object keys."""

from __future__ import annotations

import pytest

from pipeline.storage.keys import MAX_KEY_BYTES, UnsafeKey, sanitize_key


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a.png", "a.png"),
        ("catalogue/job/sku-1.png", "catalogue/job/sku-1.png"),
        ("a//b///c.png", "a/b/c.png"),
        ("jobs/spring catalogue/größe/sku 1.png", "jobs/spring catalogue/größe/sku 1.png"),
        ("a/..b/c..png", "a/..b/c..png"),
        ("/".join(["é" * 127] * 4), "/".join(["é" * 127] * 4)),
    ],
)
def test_safe_keys(key: str, expected: str) -> None:
    assert sanitize_key(key) == expected


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs.png",
        "//abs.png",
        "..",
        "../x",
        "a/../b",
        "a/..",
        "./a",
        "a/./b",
        "a/",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a\tb",
        "a\x7fb",
        "a\x85b",
        "x" * (MAX_KEY_BYTES + 1),
        "é" * 513,
        "a/" + "s" * 256,
        "\ud800",
    ],
)
def test_unsafe_keys(key: str) -> None:
    with pytest.raises(UnsafeKey):
        sanitize_key(key)


def test_unsafe_key_is_a_value_error() -> None:
    assert issubclass(UnsafeKey, ValueError)
