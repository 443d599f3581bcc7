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
        """Raise StorageError if the backend cannot be reached or storing under it could be refused later (explicit
        start step, not the constructor; includes `check_location`). Call it before paying for anything: at
        submit and at worker start. A non-retryable StorageError is a configuration to fix, not an outage."""
        ...

    def check_location(self) -> None:
        """Raise StorageError if keys stored here could be refused or land outside the configured root/prefix
        (for files: a symbolic link leading out of the root, `_cache`/`_thumbs` being links). Reads only, no
        network, creates nothing: what `validate` runs."""
        ...
