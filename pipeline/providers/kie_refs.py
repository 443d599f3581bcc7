"""References for Kie.ai, which takes them only as URLs ("File URL after upload, not file content").

Two ways, chosen at the composition root from the storage the deployment has:
- S3 storage: the reference is put in the bucket (content-addressed, once) and passed as a short-lived presigned
  GET URL (`reference_url_ttl_s`, default an hour).
- File storage: Kie's own file upload API (docs.kie.ai/file-upload-api: base64 JSON up to 10 MB, multipart stream
  above; files are free and deleted after 3 days), at `upload_base_url`.
The presigned half is shared with other providers (pipeline.providers.reference_urls). With neither, validate
refuses a manifest whose items have references and may go to Kie, naming the provider and the fix
(pipeline.providers.checks), so nothing fails at call time.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from pipeline.clock import Clock, utcnow
from pipeline.config import ProviderConfig
from pipeline.errors import ProviderUnavailable
from pipeline.providers.base import Reference
from pipeline.providers.http import CONNECT_TIMEOUT_S, MAX_MESSAGE_CHARS, translate_transport_error
from pipeline.providers.kie_wire import BASE64_UPLOAD_PATH, STREAM_UPLOAD_PATH, envelope_error
from pipeline.providers.reference_urls import (
    REFERENCE_FOLDER,
    PresignedReferences,
    ReferenceHost,
    UrlReuse,
    reference_name,
)
from pipeline.storage.base import Storage

__all__ = ["KieUploads", "PresignedReferences", "ReferenceHost", "reference_host"]

#: message of a call that reaches Kie with references and no way to pass them (validate refuses such jobs first)
WITHOUT_URLS = "references need S3 storage or upload_base_url for Kie.ai"
#: largest reference sent as base64 JSON; above it the multipart stream upload (as the docs advise)
BASE64_MAX_BYTES = 10 * 1024 * 1024
#: an uploaded file's URL is reused for this long (Kie deletes uploads after 3 days)
UPLOAD_REUSE_S = 2 * 24 * 3600.0
UPLOAD_TIMEOUT_S = 120.0


class KieUploads:
    """References uploaded to Kie's file service (`upload_base_url`), passed by the downloadUrl it answers."""

    def __init__(self, client: httpx.Client, base_url: str, api_key: str | None, *, provider: str,
                 clock: Clock = utcnow, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._provider = provider
        self._clock = clock
        self._reuse = UrlReuse(monotonic)

    def url_for(self, ref: Reference) -> str:
        cached = self._reuse.get(ref.sha256)
        if cached:
            return cached
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        timeout = httpx.Timeout(UPLOAD_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        fields = {"uploadPath": REFERENCE_FOLDER, "fileName": reference_name(ref)}
        try:
            if len(ref.data) <= BASE64_MAX_BYTES:
                data_url = f"data:{ref.mime_type};base64,{base64.b64encode(ref.data).decode()}"
                resp = self._client.post(f"{self._base}{BASE64_UPLOAD_PATH}", headers=headers, timeout=timeout,
                                         json={"base64Data": data_url, **fields})
            else:
                resp = self._client.post(f"{self._base}{STREAM_UPLOAD_PATH}", headers=headers, timeout=timeout,
                                         data=fields, files={"file": (reference_name(ref), ref.data, ref.mime_type)})
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
        return PresignedReferences(storage, config.reference_url_ttl_s, provider=config.name, fallback=uploads,
                                   without_urls=WITHOUT_URLS)
    return uploads
