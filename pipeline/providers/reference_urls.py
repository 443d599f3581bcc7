"""References passed to a provider by URL instead of inline: put in our own bucket and handed out as short-lived
presigned GET URLs. Kie.ai takes references only this way (pipeline.providers.kie_refs); AIML API takes them this
way above its preset's inline size (pipeline.providers.openai_images).

The object is content-addressed (`provider-references/<sha256>.<ext>`), put once, and its URL reused while at
least half of its life is left. `storage` is the backend itself, not the spool: a spooled object is not in the
bucket yet, so its URL would not work. A storage without such URLs (files) answers None: the caller's fallback
takes over, or the call is refused (validate refuses such jobs up front: pipeline.providers.checks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from pipeline.errors import InvalidRequest, ProviderUnavailable, StorageError
from pipeline.providers.base import Reference
from pipeline.storage.base import Storage

#: folder of references in our bucket (and uploadPath on Kie's file service)
REFERENCE_FOLDER = "provider-references"
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class ReferenceHost(Protocol):
    def url_for(self, ref: Reference) -> str:
        """An http(s) URL the provider can fetch `ref` from. Raises ProviderError (never billed: nothing was
        asked of the provider yet)."""
        ...


def reference_name(ref: Reference) -> str:
    """The reference's file name: its content hash and extension."""
    return f"{ref.sha256}.{EXTENSIONS.get(ref.mime_type, 'png')}"


class UrlReuse:
    """URLs by content hash until they are too old to hand out (thread safe)."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._urls: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._monotonic = monotonic

    def get(self, sha: str) -> str | None:
        with self._lock:
            hit = self._urls.get(sha)
        return hit[0] if hit and hit[1] > self._monotonic() else None

    def put(self, sha: str, url: str, good_for_s: float) -> str:
        with self._lock:
            self._urls[sha] = (url, self._monotonic() + good_for_s)
        return url


class PresignedReferences:
    """References in our own bucket, passed by presigned URL; a storage without such URLs (files) hands them to
    `fallback` (Kie's upload API) or, without one, refuses the call with `without_urls` (a configuration to fix:
    validate refuses such jobs first)."""

    def __init__(self, storage: Storage, ttl_s: int, *, provider: str, fallback: ReferenceHost | None = None,
                 without_urls: str = "references need S3 storage (presigned URLs)",
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._storage = storage
        self._ttl_s = ttl_s
        self._provider = provider
        self._fallback = fallback
        self._without_urls = without_urls
        self._reuse = UrlReuse(monotonic)

    def url_for(self, ref: Reference) -> str:
        cached = self._reuse.get(ref.sha256)
        if cached:
            return cached
        key = f"{REFERENCE_FOLDER}/{reference_name(ref)}"
        try:
            url = self._storage.presigned_url(key, self._ttl_s)  # signed locally; valid once the object is there
            if url is None:
                if self._fallback is None:
                    raise InvalidRequest(self._without_urls, provider=self._provider)
                return self._fallback.url_for(ref)
            if not self._storage.exists(key):
                self._storage.put(key, ref.data, ref.mime_type, {"sha256": ref.sha256})
        except StorageError as e:
            cls = ProviderUnavailable if e.retryable else InvalidRequest
            raise cls(f"reference upload to storage failed: {e}", provider=self._provider,
                      error_class="reference") from None
        return self._reuse.put(ref.sha256, url, self._ttl_s / 2)  # at least half its life left when handed out
