"""Gemini Batch API (half price, asynchronous): the adapter half. PROVIDERS.md §3.

The pipeline's periodic task drives it: `create` a batch of keyed requests, `get` its status now and then,
and once `done`, `results` maps every key to an ImageResult or a ProviderError, classified one by one (a
batch can end SUCCEEDED with failed lines). `cancel` stops a batch. An unclear create (read timeout, lost
answer: ProviderTimeout) must be resolved with `find_by_display_name` before any resubmission, so give
every batch a unique display name.

Wire notes: requests go inline while the whole create body stays under INLINE_MAX_BYTES, otherwise as a
JSONL file through the resumable File API (`inputConfig.fileName`). Results are read inline or from
`responsesFile` (downloaded with `GET /v1beta/files/{id}:download?alt=media`). What a batch looks like on the
wire (states, counts, where its output sits) is pipeline.providers.gemini_batch_state. Prices: usage at the
batch rates, else the preset's (half-price) table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, Unpack
from urllib.parse import quote, urlsplit

import httpx

from pipeline.config import ProviderConfig
from pipeline.errors import InputError, ProviderError, ProviderUnavailable
from pipeline.providers.adapter import AdapterOptions, HttpAdapter
from pipeline.providers.base import ImageRequest, ImageResult
from pipeline.providers.gemini import auth_headers, model_path, request_body
from pipeline.providers.gemini_answer import parse_generate_response
from pipeline.providers.gemini_batch_state import (
    BatchHandle,
    BatchState,
    BatchStatus,
    batch_output,
    inlined_responses,
    normalize_state,
)
from pipeline.providers.gemini_errors import classify_error, item_error
from pipeline.providers.http import MAX_MESSAGE_CHARS, scrub
from pipeline.providers.pricing import require_price

__all__ = ["BatchHandle", "BatchState", "BatchStatus", "GeminiBatchClient", "normalize_state"]

#: largest create body sent inline; the API's limit is 20 MB "total request size", this keeps a margin
INLINE_MAX_BYTES = 19_000_000
#: MIME type of the JSONL input file
JSONL_MIME = "application/jsonl"
#: pages `find_by_display_name` reads at most
MAX_LIST_PAGES = 50
#: read timeout for batch calls that move no images (create answers, status without output, cancel)
CONTROL_TIMEOUT_S = 60.0
#: largest batch answer read (inline results of a whole batch, or its JSONL results file)
MAX_BATCH_ANSWER_BYTES = 2 * 1024 * 1024 * 1024


class GeminiBatchClient(HttpAdapter):
    def __init__(
        self,
        config: ProviderConfig,
        api_key: str | None,
        client: httpx.Client,
        *,
        inline_max_bytes: int = INLINE_MAX_BYTES,
        **options: Unpack[AdapterOptions],
    ) -> None:
        super().__init__(config, api_key, client, **options)
        self.inline_max_bytes = inline_max_bytes
        self._model = model_path(config.model)

    # --- plumbing ----------------------------------------------------------------------------------------

    def _headers(self, url: str) -> dict[str, str]:
        """Auth only for our provider's origin (an upload URL on another host gets no key)."""
        if urlsplit(url)[:2] != urlsplit(self.base_url)[:2]:
            return {}
        return auth_headers(self.config, self._key)

    def _send(
        self, method: str, url: str, *, timeout_s: float = CONTROL_TIMEOUT_S, **kw: Any
    ) -> httpx.Response:
        headers = {**self._headers(url), **kw.pop("headers", {})}
        resp = self.request(
            method, url, headers=headers, timeout_s=timeout_s, max_bytes=MAX_BATCH_ANSWER_BYTES, **kw
        )
        if resp.status_code >= 400:
            payload = self.json_of(resp)
            raise classify_error(
                resp.status_code,
                payload,
                provider=self.name,
                headers=resp.headers,
                day_reset_hour_utc=self.config.day_reset_hour_utc,
                now=self._clock(),
                text=resp.text[:MAX_MESSAGE_CHARS] if payload is None else "",
            )
        return resp

    def _json(self, resp: httpx.Response) -> Mapping[str, Any]:
        payload = self.json_of(resp)
        if not isinstance(payload, Mapping):
            raise ProviderUnavailable(
                "batch answer is not a JSON object",
                provider=self.name,
                http_status=resp.status_code,
                error_class="malformed",
            )
        return payload

    def _batch_url(self, name: str, suffix: str = "") -> str:
        if not name.startswith("batches/") or "/" in name[len("batches/") :] or len(name) <= len("batches/"):
            raise InputError(f"not a batch name: {name!r}")
        return f"{self.base_url}/v1beta/batches/{quote(name[len('batches/') :], safe='')}{suffix}"

    # --- create ------------------------------------------------------------------------------------------

    def create(self, display_name: str, requests: Sequence[tuple[str, ImageRequest]]) -> BatchHandle:
        """Submit one batch. Raises ProviderTimeout (maybe billed) when the answer is lost: then call
        find_by_display_name(display_name) before submitting again."""
        keys = [k for k, _ in requests]
        if not keys or len(set(keys)) != len(keys) or not all(keys):
            raise InputError("batch needs at least one request and unique, non-empty keys")
        with self.scrubbing():
            for _, req in requests:
                require_price(self.config, req.resolution)
            inline = [{"request": request_body(r), "metadata": {"key": k}} for k, r in requests]
            batch: dict[str, Any] = {"displayName": display_name, "model": f"models/{self._model}"}
            body = json.dumps({"batch": {**batch, "inputConfig": {"requests": {"requests": inline}}}})
            mode: Literal["inline", "file"] = "inline"
            input_file = None
            if len(body.encode()) > self.inline_max_bytes:
                lines = "".join(
                    json.dumps({"key": k, "request": request_body(r)}) + "\n" for k, r in requests
                )
                input_file = self.upload_jsonl(display_name, lines.encode())
                body = json.dumps({"batch": {**batch, "inputConfig": {"fileName": input_file}}})
                mode = "file"
            url = f"{self.base_url}/v1beta/models/{self._model}:batchGenerateContent"
            resp = self._send(
                "POST",
                url,
                content=body,
                headers={"Content-Type": "application/json"},
                timeout_s=self.config.timeout_s,
            )
            status = BatchStatus.from_operation(self._json(resp))
            if not status.name:
                raise ProviderUnavailable(
                    "batch create answer has no name",
                    provider=self.name,
                    http_status=resp.status_code,
                    error_class="malformed",
                    maybe_billed=True,
                )
        return BatchHandle(
            name=status.name, display_name=display_name, keys=tuple(keys), mode=mode, input_file=input_file
        )

    def upload_jsonl(self, display_name: str, data: bytes) -> str:
        """Upload a JSONL file with the resumable File API; returns its name ("files/...")."""
        start = self._send(
            "POST",
            f"{self.base_url}/upload/v1beta/files",
            headers={
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(len(data)),
                "X-Goog-Upload-Header-Content-Type": JSONL_MIME,
                "Content-Type": "application/json",
            },
            content=json.dumps({"file": {"displayName": display_name}}),
        )
        upload_url = start.headers.get("x-goog-upload-url")
        if not upload_url:
            raise ProviderUnavailable(
                "file upload start gave no upload URL",
                provider=self.name,
                http_status=start.status_code,
                error_class="malformed",
            )
        upload_url = str(httpx.URL(self.base_url + "/").join(upload_url))
        done = self._send(
            "POST",
            upload_url,
            content=data,
            timeout_s=self.config.timeout_s,
            headers={
                "X-Goog-Upload-Command": "upload, finalize",
                "X-Goog-Upload-Offset": "0",
                "Content-Type": JSONL_MIME,
            },
        )
        status = done.headers.get("x-goog-upload-status")
        file = self._json(done).get("file")
        name = file.get("name") if isinstance(file, Mapping) else None
        if (
            (status and status.lower() != "final")
            or not isinstance(name, str)
            or not name.startswith("files/")
        ):
            raise ProviderUnavailable(
                "file upload did not finish",
                provider=self.name,
                http_status=done.status_code,
                error_class="upload",
            )
        return name

    # --- status, results ---------------------------------------------------------------------------------

    def get(self, name: str) -> BatchStatus:
        with self.scrubbing():
            resp = self._send("GET", self._batch_url(name), timeout_s=self.config.timeout_s)
            return BatchStatus.from_operation(self._json(resp))

    def results(
        self, status: BatchStatus, requests: Mapping[str, ImageRequest]
    ) -> dict[str, ImageResult | ProviderError]:
        """Every key of `requests` mapped to its image or its error, for a batch that is done. Keys the
        output lacks get a retryable error (batch_failed, batch_expired, batch_cancelled, missing)."""
        with self.scrubbing():
            items = self._output_items(status)
        now = self._clock()
        out: dict[str, ImageResult | ProviderError] = {}
        for item in items:
            key = item.get("key")
            if key is None and isinstance(item.get("metadata"), Mapping):
                key = item["metadata"].get("key")
            if not isinstance(key, str) or key not in requests or key in out:
                continue
            out[key] = self._item_result(item, requests[key], now)
        why = {
            BatchState.FAILED: ("batch_failed", f"batch failed: {status.error or 'no reason given'}"),
            BatchState.EXPIRED: ("batch_expired", "batch expired before this request ran"),
            BatchState.CANCELLED: ("batch_cancelled", "batch was cancelled"),
        }.get(status.state, ("missing", "request missing from the batch output"))
        for key in requests:
            if key not in out:
                out[key] = scrub(
                    ProviderUnavailable(why[1], provider=self.name, error_class=why[0]), self._key
                )
        return out

    def _item_result(
        self, item: Mapping[str, Any], request: ImageRequest, now: Any
    ) -> ImageResult | ProviderError:
        try:
            err = item.get("error")
            if isinstance(err, Mapping):
                return item_error(err, provider=self.name, now=now, day_reset_hour_utc=self.config.day_reset_hour_utc)
            return parse_generate_response(
                item.get("response"), request, config=self.config, batch=True, now=now
            )
        except ProviderError as e:
            return scrub(e, self._key)

    def _output_items(self, status: BatchStatus) -> list[Mapping[str, Any]]:
        out = batch_output(status.raw)
        inline = inlined_responses(out)
        if inline is not None:
            return inline
        file_name = out.get("responsesFile")
        if not isinstance(file_name, str) or not file_name.startswith("files/"):
            return []
        file_id = quote(file_name[len("files/") :], safe="")
        resp = self._send(
            "GET",
            f"{self.base_url}/v1beta/files/{file_id}:download",
            params={"alt": "media"},
            timeout_s=self.config.timeout_s,
        )
        items: list[Mapping[str, Any]] = []
        for line in resp.text.splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # a broken line: its key is reported missing
            if isinstance(item, Mapping):
                items.append(item)
        return items

    # --- cancel, list ------------------------------------------------------------------------------------

    def cancel(self, name: str) -> None:
        with self.scrubbing():
            self._send(
                "POST",
                self._batch_url(name, ":cancel"),
                content=b"",
                headers={"Content-Type": "application/json"},
            )

    def list(self, page_size: int = 50) -> Iterator[BatchStatus]:
        """Every batch the key can see, page by page (newest first on Google's side)."""
        token: str | None = None
        for _ in range(MAX_LIST_PAGES):
            params: dict[str, Any] = {"pageSize": page_size}
            if token:
                params["pageToken"] = token
            with self.scrubbing():
                payload = self._json(self._send("GET", f"{self.base_url}/v1beta/batches", params=params))
            ops = payload.get("operations", payload.get("batches"))
            for op in ops if isinstance(ops, list) else []:
                if isinstance(op, Mapping):
                    yield BatchStatus.from_operation(op)
            token = payload.get("nextPageToken") or None
            if not token:
                return

    def find_by_display_name(self, display_name: str) -> BatchStatus | None:
        """The newest batch named `display_name`, or None: resolves an unclear create."""
        found = [s for s in self.list() if s.display_name == display_name]
        return max(found, key=lambda s: s.create_time) if found else None
