"""The storage seam. Keys are relative, sanitised (storage.keys) and always inside the configured prefix."""

from __future__ import annotations

from typing import Protocol


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> str:
        """Store `data` under `key` (overwriting). Returns the object's URL (s3://..., file://...)."""
        ...

    def copy(self, src_key: str, dst_key: str) -> str:
        """Copy (or link) an object to another key; returns the destination URL."""
        ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def url(self, key: str) -> str: ...

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A short-lived http(s) URL another host can GET the object from (no credentials needed), valid for
        `expires_s` seconds; None when the backend has no such URL (file storage). Computing it does no I/O."""
        ...

    def check(self) -> None:
        """Raise StorageError if the backend cannot be reached (explicit start step, not the constructor)."""
        ...
