"""Storage key sanitising: the one rule for what an object key may be (every backend and the manifest).

A key is a relative, '/'-separated path. Repeated slashes are collapsed ('a//b' -> 'a/b'); after that a key is
refused (UnsafeKey) when it is empty, absolute, has a backslash, a control character (C0, DEL, C1), a '.' or
'..' segment, an empty segment (a trailing '/'), a segment longer than 255 bytes (no file system takes it) or
is longer than 1024 bytes in UTF-8 (the S3 limit).
"""

from __future__ import annotations

import re

#: longest key in UTF-8 bytes (S3's own limit)
MAX_KEY_BYTES = 1024
#: longest segment in UTF-8 bytes (NAME_MAX of common file systems: the file backend maps segments to names)
MAX_SEGMENT_BYTES = 255

_SLASHES = re.compile(r"/{2,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UnsafeKey(ValueError):
    """A storage key that could escape its prefix or is otherwise not a plain relative path."""


def sanitize_key(key: str) -> str:
    """Return the normalised form of `key` (repeated slashes collapsed), or raise UnsafeKey."""
    if not isinstance(key, str) or not key:
        raise UnsafeKey("empty storage key")
    if _CONTROL.search(key):
        raise UnsafeKey(f"control character in storage key: {key!r}")
    if "\\" in key:
        raise UnsafeKey(f"backslash in storage key: {key!r}")
    if key.startswith("/"):
        raise UnsafeKey(f"absolute storage key: {key!r}")
    key = _SLASHES.sub("/", key)
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates cannot name an object anywhere
        raise UnsafeKey(f"storage key is not valid Unicode: {key!r}") from None
    if size > MAX_KEY_BYTES:
        raise UnsafeKey(f"storage key is {size} bytes, more than {MAX_KEY_BYTES}: {key[:60]!r}...")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise UnsafeKey(f"bad segment {segment!r} in storage key: {key!r}")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise UnsafeKey(f"a segment of storage key is longer than {MAX_SEGMENT_BYTES} bytes: "
                            f"{key[:60]!r}...")
    return key
