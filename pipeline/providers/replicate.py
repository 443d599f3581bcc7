"""Replicate predictions for google/nano-banana-pro: PROVIDERS.md §6.

One create per generate() call, never two: `POST /v1/models/{owner}/{name}/predictions` with
`Prefer: wait=N`; the prediction id goes to `hooks.submitted` as soon as the answer names it (before any
polling); an unfinished prediction is polled by id (`GET /v1/predictions/{id}`) every poll_interval_s
until config.timeout_s; then ProviderTimeout(maybe_billed=True, remote_id=id), and the pipeline calls
`resume(id, request)` on the next attempt instead of paying for a second prediction. The output URL is
downloaded at once (Replicate deletes it after an hour). Replicate bills per image: cost from the table.
References up to DATA_URL_MAX_BYTES (256 KB) go inline as data URLs; larger ones are uploaded first through
the files API (`POST /v1/files`, field `content`) and passed by the file's `urls.get`, as Replicate's HTTP
API reference advises ("Use an HTTP URL when you have a large file > 256kb").

Errors, classified here once:

    429 (create or poll)          RateLimited(body retry_after, Retry-After, "resets in ~Ns")
    401, 403                      AuthError;  402  QuotaExhausted
    400, 404, 422                 InvalidRequest(detail)
    5xx, 408, 409                 ProviderUnavailable
    status failed, safety text    ContentBlocked("image blocked: <error>")  (E005, NSFW, sensitive)
    status failed, "no image"     ContentBlocked("no image: <error>")  (declined, like Gemini NO_IMAGE)
    status failed, other          ProviderUnavailable(error_class="prediction_failed")
    status canceled               ProviderUnavailable(error_class="canceled")
    output download failed        ProviderUnavailable(maybe_billed, cost_usd, remote_id: resume downloads it)
    bad image                     BadImage(maybe_billed, cost_usd)
Poll errors that may pass (transport errors, 429, 5xx) are retried until the deadline.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Unpack
from urllib.parse import quote

import httpx

from pipeline.config import ProviderConfig
from pipeline.errors import (
    AuthError,
    BadImage,
    ContentBlocked,
    InputError,
    InvalidRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pipeline.providers.adapter import AdapterOptions, HttpAdapter
from pipeline.providers.base import CallHooks, ImageRequest, ImageResult
from pipeline.providers.http import MAX_MESSAGE_CHARS, retry_after_s, short_text
from pipeline.providers.images import image_mime, validate_image
from pipeline.providers.pricing import PRICE_TABLE, require_price, table_cost

#: seconds the create call asks Replicate to hold the request open (`Prefer: wait`, 1-60)
MAX_WAIT_S = 60
#: default seconds between polls of an unfinished prediction
POLL_INTERVAL_S = 1.0
#: extra read time on top of the wait before the create call counts as timed out
WAIT_MARGIN_S = 10.0
#: largest reference sent inline as a data URL; larger ones go through the files API and are passed by URL
#: ("Use a data URL when you have a small file <= 256kb", Replicate's HTTP API reference, prediction input)
DATA_URL_MAX_BYTES = 256 * 1024
#: read timeout of a file upload
UPLOAD_TIMEOUT_S = 60.0
#: read timeout of a poll (GET /v1/predictions/{id})
POLL_TIMEOUT_S = 30.0
#: words in a failed prediction's error that mean a safety refusal (terminal)
SAFETY_WORDS = ("safety", "nsfw", "sensitive", "flagged", "e005", "content policy", "prohibited")
#: words that mean the model declined to draw (Gemini NO_IMAGE behind Replicate): terminal
REFUSAL_WORDS = ("no image", "returned no image", "different prompt")
TERMINAL_STATES = ("succeeded", "failed", "canceled")
_RESETS_IN = re.compile(r"resets in\s*~?\s*([0-9]+(?:\.[0-9]+)?)\s*s", re.IGNORECASE)


def _body_retry_after(payload: Mapping[str, Any]) -> float | None:
    value = payload.get("retry_after")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    m = _RESETS_IN.search(str(payload.get("detail", "")))
    return float(m.group(1)) if m else None


def classify_error(
    status: int, payload: Any, *, provider: str, headers: Mapping[str, str], now: datetime, text: str = ""
) -> ProviderError:
    """A Replicate error answer (RFC 7807 problem details) as the right error."""
    body: Mapping[str, Any] = payload if isinstance(payload, Mapping) else {}
    message = short_text(body.get("detail") or body.get("title") or text or "no message")
    label = f"HTTP {status}: {message}"
    kw: dict[str, Any] = {"provider": provider, "http_status": status}
    if status == 429:
        delay = _body_retry_after(body)
        return RateLimited(
            label, retry_after_s=delay if delay is not None else retry_after_s(headers, now), **kw
        )
    if status in (401, 403):
        return AuthError(label, **kw)
    if status == 402:
        return QuotaExhausted(label, **kw)
    if status >= 500 or status in (408, 409):
        return ProviderUnavailable(label, retry_after_s=retry_after_s(headers, now), **kw)
    return InvalidRequest(label, **kw)


def _output_url(output: Any) -> str | None:
    if isinstance(output, str) and output:
        return output
    if isinstance(output, list) and output and isinstance(output[0], str):
        return output[0]
    return None


class ReplicateProvider(HttpAdapter):
    """google/nano-banana-pro (or config.model) on Replicate. `sleep` and `monotonic` are injectable so
    tests of polling do not wait."""

    def __init__(
        self,
        config: ProviderConfig,
        api_key: str | None,
        client: httpx.Client,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        poll_interval_s: float = POLL_INTERVAL_S,
        **options: Unpack[AdapterOptions],
    ) -> None:
        owner, _, name = config.model.partition("/")
        if not owner or not name or "/" in name:
            raise InputError("model must be owner/name", where=f"providers.{config.name}.model")
        super().__init__(config, api_key, client, **options)
        self._sleep = sleep
        self._monotonic = monotonic
        self.poll_interval_s = poll_interval_s
        self.create_url = (
            f"{self.base_url}/v1/models/{quote(owner, safe='')}/{quote(name, safe='')}/predictions"
        )
        self.wait_s = max(1, min(MAX_WAIT_S, int(config.timeout_s)))

    def _error(self, resp: httpx.Response, payload: Any) -> ProviderError:
        """An error answer of this provider (its parsed body `payload`) as the right error."""
        return classify_error(resp.status_code, payload, provider=self.name, headers=resp.headers, now=self._clock(),
                              text=resp.text[:MAX_MESSAGE_CHARS])

    def __repr__(self) -> str:
        return f"ReplicateProvider(name={self.name!r}, url={self.create_url!r})"

    # --- the seam ----------------------------------------------------------------------------------------

    def generate(self, request: ImageRequest, hooks: CallHooks | None = None) -> ImageResult:
        """Create one prediction and see it to the end (or to config.timeout_s). Never creates twice."""
        with self.scrubbing():
            require_price(self.config, request.resolution, usage_ok=False)
            deadline = self._monotonic() + self.config.timeout_s
            prediction = self._create(request)
            remote_id = str(prediction["id"])
            (hooks or CallHooks()).submitted(remote_id)
            return self._finish(prediction, request, deadline)

    def resume(self, remote_id: str, request: ImageRequest) -> ImageResult:
        """Poll an existing prediction (an earlier attempt's) to its end and download its output."""
        with self.scrubbing():
            require_price(self.config, request.resolution, usage_ok=False)
            deadline = self._monotonic() + self.config.timeout_s
            prediction = self._poll_until_answer(remote_id, deadline)
            return self._finish(prediction, request, deadline)

    # --- calls -------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def input(self, request: ImageRequest, uploaded: dict[str, str] | None = None) -> dict[str, Any]:
        """The prediction input; references by their uploaded URL (`uploaded`: sha256 -> URL) or as data URLs."""
        uploaded = uploaded or {}
        refs = [
            uploaded.get(r.sha256) or f"data:{r.mime_type};base64,{base64.b64encode(r.data).decode()}"
            for r in request.references
        ]
        fmt = request.output_format.lower()
        return {
            "prompt": request.prompt,
            "image_input": refs,
            "aspect_ratio": request.aspect_ratio,
            "resolution": request.resolution,
            "output_format": "jpg" if fmt in ("jpg", "jpeg") else "png",
        }

    def _create(self, request: ImageRequest) -> Mapping[str, Any]:
        headers = {**self._headers(), "Content-Type": "application/json", "Prefer": f"wait={self.wait_s}"}
        resp = self.request(
            "POST",
            self.create_url,
            content=json.dumps({"input": self.input(request, self._upload_large(request))}),
            headers=headers,
            timeout_s=self.wait_s + WAIT_MARGIN_S,
        )
        payload = self.json_of(resp)
        if resp.status_code not in (200, 201, 202):
            raise self._error(resp, payload)
        if not isinstance(payload, Mapping) or not isinstance(payload.get("id"), str) or not payload["id"]:
            # created (and maybe billed) but we cannot name it: nothing to resume
            raise ProviderUnavailable(
                "create answer has no prediction id",
                provider=self.name,
                http_status=resp.status_code,
                error_class="malformed",
                maybe_billed=True,
            )
        return payload

    def _upload_large(self, request: ImageRequest) -> dict[str, str]:
        """Upload references over DATA_URL_MAX_BYTES through the files API; sha256 -> the file's URL. Nothing is
        billed yet: a failed upload is an unbilled, retryable error before the prediction is created."""
        out: dict[str, str] = {}
        for ref in request.references:
            if len(ref.data) > DATA_URL_MAX_BYTES and ref.sha256 not in out:
                out[ref.sha256] = self.upload_file(ref.data, ref.mime_type, f"reference-{ref.sha256[:12]}")
        return out

    def upload_file(self, data: bytes, mime_type: str, name: str) -> str:
        """`POST /v1/files` (multipart field `content`, as replicate-python's files.create sends it); the file's
        `urls.get`, which predictions take as an input URL (replicate-python helpers.encode_json)."""
        ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(mime_type, "bin")
        resp = self.request(
            "POST",
            f"{self.base_url}/v1/files",
            files={"content": (f"{name}.{ext}", data, mime_type)},
            headers=self._headers(),
            timeout_s=UPLOAD_TIMEOUT_S,
        )
        payload = self.json_of(resp)
        if resp.status_code not in (200, 201):
            raise self._error(resp, payload)
        urls = payload.get("urls") if isinstance(payload, Mapping) else None
        url = urls.get("get") if isinstance(urls, Mapping) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ProviderUnavailable(
                "file upload answer has no urls.get", provider=self.name, http_status=resp.status_code,
                error_class="upload",
            )
        return url

    def _get(self, remote_id: str) -> Mapping[str, Any] | float:
        """The prediction, or the seconds to wait before asking again (a passing fault)."""
        url = f"{self.base_url}/v1/predictions/{quote(remote_id, safe='')}"
        try:
            resp = self.request("GET", url, headers=self._headers(), timeout_s=POLL_TIMEOUT_S)
        except ProviderError as e:
            if e.error_class in ("connect", "timeout", "disconnected", "unavailable"):
                return float(self.poll_interval_s)  # a transport fault while polling: ask again
            raise
        payload = self.json_of(resp)
        if resp.status_code == 200 and isinstance(payload, Mapping) and payload.get("status"):
            return payload
        err = self._error(resp, payload)
        if resp.status_code == 200 or isinstance(err, RateLimited | ProviderUnavailable):
            return float(max(err.retry_after_s or 0.0, self.poll_interval_s))
        if resp.status_code == 404:  # gone: nothing left to resume, the next attempt must create anew
            raise ProviderUnavailable(
                f"prediction {remote_id} not found",
                provider=self.name,
                http_status=404,
                error_class="prediction_lost",
                maybe_billed=True,
            )
        err.remote_id = remote_id
        raise err

    def _poll_until_answer(self, remote_id: str, deadline: float) -> Mapping[str, Any]:
        while True:
            got = self._get(remote_id)
            if not isinstance(got, float):
                return got
            self._wait_or_timeout(remote_id, deadline, got)

    def _wait_or_timeout(self, remote_id: str, deadline: float, wait_s: float) -> None:
        remaining = deadline - self._monotonic()
        if remaining <= 0:
            raise ProviderTimeout(
                f"prediction {remote_id} unfinished after {self.config.timeout_s:g}s (may still be billed)",
                provider=self.name,
                maybe_billed=True,
                remote_id=remote_id,
            )
        self._sleep(min(wait_s, remaining))

    def _finish(self, prediction: Mapping[str, Any], request: ImageRequest, deadline: float) -> ImageResult:
        remote_id = str(prediction["id"]) if prediction.get("id") else ""
        while str(prediction.get("status")) not in TERMINAL_STATES:
            self._wait_or_timeout(remote_id, deadline, self.poll_interval_s)
            prediction = self._poll_until_answer(remote_id, deadline)
        status = str(prediction.get("status"))
        if status == "failed":
            error = short_text(prediction.get("error") or "prediction failed")
            if any(w in error.lower() for w in SAFETY_WORDS):
                raise ContentBlocked(f"image blocked: {error}", provider=self.name, http_status=200)
            if any(w in error.lower() for w in REFUSAL_WORDS):
                raise ContentBlocked(f"no image: {error}", provider=self.name, http_status=200)
            raise ProviderUnavailable(
                f"prediction failed: {error}",
                provider=self.name,
                http_status=200,
                error_class="prediction_failed",
            )
        if status == "canceled":
            raise ProviderUnavailable(
                "prediction was canceled", provider=self.name, http_status=200, error_class="canceled"
            )
        return self._result(prediction, request, remote_id)

    def _result(self, prediction: Mapping[str, Any], request: ImageRequest, remote_id: str) -> ImageResult:
        cost = table_cost(self.config, request.resolution, len(request.references))
        assert cost is not None  # require_price checked it
        billed: dict[str, Any] = {
            "provider": self.name,
            "http_status": 200,
            "maybe_billed": True,
            "cost_usd": cost,
        }
        url = _output_url(prediction.get("output"))
        if url is None or prediction.get("data_removed") is True:
            raise ProviderUnavailable(
                "prediction succeeded without an output URL (removed?)", error_class="malformed", **billed
            )
        try:
            data, mime = self.download(url, deadline=self.call_deadline())
        except ProviderUnavailable as e:  # resume() downloads it again without paying again
            raise ProviderUnavailable(
                e.message, error_class="download", remote_id=remote_id, **billed
            ) from None
        try:
            validate_image(
                data, mime, request.resolution, request.aspect_ratio, policy="ratio", provider=self.name
            )
        except BadImage as e:
            raise BadImage(e.message, **billed) from None
        metrics = prediction.get("metrics")
        return ImageResult(
            data=data,
            mime_type=image_mime(data) or mime,
            cost_usd=cost,
            cost_source=PRICE_TABLE,
            usage=dict(metrics) if isinstance(metrics, Mapping) else {},
            remote_id=remote_id,
        )
