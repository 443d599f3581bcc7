"""References for Kie.ai, which takes them only as URLs ("File URL after upload, not file content").

Two ways, chosen at the composition root from the storage the deployment has:
- S3 storage: the reference is put in the bucket (content-addressed, once) and passed as a short-lived presigned
  GET URL (`reference_url_ttl_s`, default an hour).
- File storage: Kie's own file upload API (docs.kie.ai/file-upload-api: base64 JSON up to 10 MB, multipart stream
  above; files are free and deleted after 3 days), at `upload_base_url`.
With neither, `check_manifest` refuses a manifest whose items have references and may go to Kie, naming the
provider and the fix, so nothing fails at call time.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import httpx

from pipeline.clock import Clock, utcnow
from pipeline.config import ProviderConfig, Settings
from pipeline.errors import InputError, InvalidRequest, ProviderUnavailable, StorageError
from pipeline.providers.base import Reference
from pipeline.providers.http import CONNECT_TIMEOUT_S, MAX_MESSAGE_CHARS, translate_transport_error
from pipeline.providers.kie_wire import BASE64_UPLOAD_PATH, MAX_IMAGE_INPUTS, STREAM_UPLOAD_PATH, envelope_error
from pipeline.storage.base import Storage

#: folder of references in our bucket, and uploadPath on Kie's file service
REFERENCE_FOLDER = "provider-references"
#: largest reference sent as base64 JSON; above it the multipart stream upload (as the docs advise)
BASE64_MAX_BYTES = 10 * 1024 * 1024
#: an uploaded file's URL is reused for this long (Kie deletes uploads after 3 days)
UPLOAD_REUSE_S = 2 * 24 * 3600.0
UPLOAD_TIMEOUT_S = 120.0
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class ReferenceHost(Protocol):
    def url_for(self, ref: Reference) -> str:
        """An http(s) URL Kie can fetch `ref` from. Raises ProviderError (never billed: no task exists yet)."""
        ...


def _name(ref: Reference) -> str:
    return f"{ref.sha256}.{EXTENSIONS.get(ref.mime_type, 'png')}"


class _Reuse:
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
    `fallback` (Kie's upload API) instead. `storage` is the backend itself (not the spool: a spooled object is
    not in the bucket yet, so its URL would not work)."""

    def __init__(self, storage: Storage, ttl_s: int, *, provider: str, fallback: ReferenceHost | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._storage = storage
        self._ttl_s = ttl_s
        self._provider = provider
        self._fallback = fallback
        self._reuse = _Reuse(monotonic)

    def url_for(self, ref: Reference) -> str:
        cached = self._reuse.get(ref.sha256)
        if cached:
            return cached
        key = f"{REFERENCE_FOLDER}/{_name(ref)}"
        try:
            url = self._storage.presigned_url(key, self._ttl_s)  # signed locally; valid once the object is there
            if url is None:
                if self._fallback is None:  # `pipeline validate` refuses such jobs up front
                    raise InvalidRequest("references need S3 storage or upload_base_url for Kie.ai",
                                         provider=self._provider)
                return self._fallback.url_for(ref)
            if not self._storage.exists(key):
                self._storage.put(key, ref.data, ref.mime_type, {"sha256": ref.sha256})
        except StorageError as e:
            cls = ProviderUnavailable if e.retryable else InvalidRequest
            raise cls(f"reference upload to storage failed: {e}", provider=self._provider,
                      error_class="reference") from None
        return self._reuse.put(ref.sha256, url, self._ttl_s / 2)  # at least half its life left when handed out


class KieUploads:
    """References uploaded to Kie's file service (`upload_base_url`), passed by the downloadUrl it answers."""

    def __init__(self, client: httpx.Client, base_url: str, api_key: str | None, *, provider: str,
                 clock: Clock = utcnow, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._provider = provider
        self._clock = clock
        self._reuse = _Reuse(monotonic)

    def url_for(self, ref: Reference) -> str:
        cached = self._reuse.get(ref.sha256)
        if cached:
            return cached
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        timeout = httpx.Timeout(UPLOAD_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        fields = {"uploadPath": REFERENCE_FOLDER, "fileName": _name(ref)}
        try:
            if len(ref.data) <= BASE64_MAX_BYTES:
                data_url = f"data:{ref.mime_type};base64,{base64.b64encode(ref.data).decode()}"
                resp = self._client.post(f"{self._base}{BASE64_UPLOAD_PATH}", headers=headers, timeout=timeout,
                                         json={"base64Data": data_url, **fields})
            else:
                resp = self._client.post(f"{self._base}{STREAM_UPLOAD_PATH}", headers=headers, timeout=timeout,
                                         data=fields, files={"file": (_name(ref), ref.data, ref.mime_type)})
        except httpx.HTTPError as e:
            err = translate_transport_error(e, self._provider)
            raise ProviderUnavailable(f"reference upload failed: {err.message}", provider=self._provider,
                                      error_class="reference") from None
        return self._reuse.put(ref.sha256, self._answer(resp), UPLOAD_REUSE_S)

    def _answer(self, resp: httpx.Response) -> str:
        try:
            payload: Any = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        err = envelope_error(resp.status_code, payload, provider=self._provider, headers=resp.headers,
                             now=self._clock(), text=resp.text[:MAX_MESSAGE_CHARS])
        if err is not None:
            err.message = f"reference upload: {err.message}"
            err.args = (err.message,)
            raise err
        data = payload.get("data") if isinstance(payload, Mapping) else None
        url = (data.get("downloadUrl") or data.get("fileUrl")) if isinstance(data, Mapping) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ProviderUnavailable("reference upload answer has no downloadUrl", provider=self._provider,
                                      error_class="reference")
        return url


def reference_host(config: ProviderConfig, *, storage: Storage | None, client: httpx.Client,
                   api_key: str | None, clock: Clock = utcnow) -> ReferenceHost | None:
    """Presigned URLs when the storage has them, else Kie's upload API when configured, else None. No I/O:
    which of the two applies is found at the first reference (S3 signs locally; file storage answers None)."""
    uploads = (KieUploads(client, config.upload_base_url, api_key, provider=config.name, clock=clock)
               if config.upload_base_url else None)
    if storage is not None:
        return PresignedReferences(storage, config.reference_url_ttl_s, provider=config.name, fallback=uploads)
    return uploads


def check_manifest(settings: Settings, providers: Iterable[str], references_per_item: Iterable[int],
                   where: str) -> None:
    """Refuse, before anything is written, a job whose references a Kie provider could not be given: more than
    Kie takes, or no way to turn them into URLs (file storage and no upload_base_url)."""
    kie = [settings.provider(n) for n in providers if n in settings.providers
           and settings.provider(n).kind == "kie"]
    most = max(references_per_item, default=0)
    if not kie or most == 0:
        return
    for cfg in kie:
        if most > MAX_IMAGE_INPUTS:
            raise InputError(f"provider {cfg.name!r} (Kie.ai) takes at most {MAX_IMAGE_INPUTS} references per item "
                             f"(an item has {most}): remove {cfg.name} from providers or use fewer references",
                             where=where)
        if not settings.storage_url.startswith("s3://") and not cfg.upload_base_url:
            raise InputError(f"provider {cfg.name!r} (Kie.ai) takes references only as URLs: set storage_url to "
                             f"s3://... (references are passed as presigned URLs) or providers.{cfg.name}."
                             "upload_base_url (Kie's file upload API), or remove it from providers", where=where)
