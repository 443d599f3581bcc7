"""Gemini `generateContent` (Google official, laozhang.ai's native endpoint, the sandbox): PROVIDERS.md §1-2.

The wire format lives in three functions the batch client reuses: `request_body` (one request),
`parse_generate_response` (one answer -> ImageResult or an error) and `classify_error` (an error envelope
-> the error tree). `GeminiProvider` adds the HTTP call. Errors are classified here, once:

    429 RESOURCE_EXHAUSTED        RateLimited(retry_after_s from RetryInfo.retryDelay, else "retry in Ns")
      quotaId *PerDay*/value "0"  DailyQuotaExceeded(until = next reset at config.day_reset_hour_utc)
    500/502/503/504, other 5xx    ProviderUnavailable
    400 API_KEY_INVALID, 401, 403 AuthError;  400 FAILED_PRECONDITION (billing/region): AuthError
    402                           QuotaExhausted (resellers out of credit)
    other 4xx                     InvalidRequest(error.message)
    200 promptFeedback.blockReason ContentBlocked("prompt blocked: <reason>")
    200 finishReason IMAGE_SAFETY.. ContentBlocked("image blocked: <reason>: <first sentence>")
    200 STOP with only text        ContentBlocked("no image: model answered with text: <200 chars>")
    200 not JSON / no candidates   ProviderUnavailable(error_class="malformed", maybe_billed)
    200 bad base64 / image / size  BadImage(maybe_billed, cost_usd)
    transport errors               pipeline.providers.http.translate_transport_error
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from pipeline.clock import Clock, utcnow
from pipeline.config import ProviderConfig
from pipeline.errors import (
    AuthError,
    BadImage,
    ContentBlocked,
    DailyQuotaExceeded,
    InvalidRequest,
    ProviderError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pipeline.providers.adapter import HttpAdapter
from pipeline.providers.base import CallHooks, ImageRequest, ImageResult
from pipeline.providers.http import MAX_MESSAGE_CHARS, retry_after_s, short_text
from pipeline.providers.images import decode_b64, image_mime, validate_image
from pipeline.providers.pricing import cost_or_list, require_price

#: what we ask for; TEXT lets the model explain a refusal instead of a bare NO_IMAGE
RESPONSE_MODALITIES = ("TEXT", "IMAGE")
#: finish reasons that mean "the image was withheld on purpose": terminal, never retried
IMAGE_BLOCK_REASONS = frozenset({
    "SAFETY", "RECITATION", "LANGUAGE", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "NO_IMAGE", "IMAGE_RECITATION", "IMAGE_OTHER",
})  # fmt: skip
_RETRY_IN = re.compile(r"retry in\s+([0-9]+(?:\.[0-9]+)?)\s*(ms|s)\b", re.IGNORECASE)
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s)?\s*$")


def model_path(model: str) -> str:
    return model.removeprefix("models/")


def request_body(request: ImageRequest) -> dict[str, Any]:
    """The generateContent body for one image request (camelCase, references as inlineData parts)."""
    parts: list[dict[str, Any]] = [{"text": request.prompt}]
    for ref in request.references:
        parts.append({"inlineData": {"mimeType": ref.mime_type, "data": base64.b64encode(ref.data).decode()}})
    return {
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {
            "responseModalities": list(RESPONSE_MODALITIES),
            "imageConfig": {"aspectRatio": request.aspect_ratio, "imageSize": request.resolution},
        },
    }


def next_reset(now: datetime, hour_utc: int) -> datetime:
    """The first `hour_utc`:00 (naive UTC) strictly after `now`."""
    reset = now.replace(hour=hour_utc, minute=0, second=0, microsecond=0)
    return reset if reset > now else reset + timedelta(days=1)


def parse_duration_s(value: Any) -> float | None:
    """A protobuf Duration string ("47s", "45.837906927s") in seconds, or None."""
    if not isinstance(value, str):
        return None
    m = _DURATION.match(value)
    if not m:
        return None
    seconds = float(m.group(1))
    return seconds / 1000.0 if m.group(2) == "ms" else seconds


def _first_sentence(text: str) -> str:
    m = re.match(r"^(.*?[.!?])(?:\s|$)", text.strip(), re.DOTALL)
    return short_text(m.group(1) if m else text, 200)


def _details(err: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    details = err.get("details")
    return [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else []


def _is_daily(err: Mapping[str, Any]) -> bool:
    for d in _details(err):
        if "QuotaFailure" not in str(d.get("@type", "")):
            continue
        for v in d.get("violations") or []:
            if not isinstance(v, Mapping):
                continue
            if "PerDay" in str(v.get("quotaId", "")) or v.get("quotaValue") == "0":
                return True
    return False


def _retry_delay(err: Mapping[str, Any], headers: Mapping[str, str]) -> float | None:
    for d in _details(err):
        if "RetryInfo" in str(d.get("@type", "")):
            delay = parse_duration_s(d.get("retryDelay"))
            if delay is not None:
                return delay
    m = _RETRY_IN.search(str(err.get("message", "")))
    if m:
        value = float(m.group(1))
        return value / 1000.0 if m.group(2).lower() == "ms" else value
    return retry_after_s(headers)


def _has_reason(err: Mapping[str, Any], reason: str) -> bool:
    return any(d.get("reason") == reason for d in _details(err))


def classify_error(
    status: int,
    payload: Any,
    *,
    provider: str,
    day_reset_hour_utc: int,
    now: datetime,
    headers: Mapping[str, str] | None = None,
    text: str = "",
) -> ProviderError:
    """An HTTP error answer (or a batch item's `error`) as the right error. `payload` is the parsed body."""
    headers = headers or {}
    err: Mapping[str, Any] = {}
    if isinstance(payload, Mapping):
        inner = payload.get("error", payload)
        err = inner if isinstance(inner, Mapping) else {"message": str(inner)}
    code = str(err.get("status") or "")
    message = short_text(err.get("message") or text or "no message")
    label = f"HTTP {status}{' ' + code if code else ''}: {message}"
    kw: dict[str, Any] = {"provider": provider, "http_status": status}
    if status == 429:
        delay = _retry_delay(err, headers)
        if _is_daily(err):
            until = next_reset(now, day_reset_hour_utc)
            return DailyQuotaExceeded(
                f"daily quota exhausted until {until:%Y-%m-%d %H:%M} UTC: {message}",
                until=until,
                retry_after_s=(until - now).total_seconds(),
                **kw,
            )
        return RateLimited(label, retry_after_s=delay, **kw)
    if status >= 500:
        return ProviderUnavailable(label, retry_after_s=retry_after_s(headers), **kw)
    if status in (401, 403) or _has_reason(err, "API_KEY_INVALID") or "API key not valid" in message:
        return AuthError(label, **kw)
    if status == 402:
        return QuotaExhausted(label, **kw)
    if status == 400 and code == "FAILED_PRECONDITION":
        # "User location is not supported", billing not enabled: every call will fail the same way
        return AuthError(label, **kw)
    if status == 408:
        return ProviderUnavailable(label, **kw)
    return InvalidRequest(label, **kw)


def _inline(part: Mapping[str, Any]) -> Mapping[str, Any] | None:
    data = part.get("inlineData", part.get("inline_data"))
    return data if isinstance(data, Mapping) else None


def parse_generate_response(
    payload: Any,
    request: ImageRequest,
    *,
    config: ProviderConfig,
    batch: bool,
    now: datetime,
    http_status: int = 200,
) -> ImageResult:
    """One GenerateContentResponse as an ImageResult (validated image, priced) or a raised ProviderError."""
    provider = config.name
    kw: dict[str, Any] = {"provider": provider, "http_status": http_status}
    malformed: dict[str, Any] = {**kw, "error_class": "malformed", "maybe_billed": True}
    if not isinstance(payload, Mapping):
        raise ProviderUnavailable("answer is not a JSON object", **malformed)
    if isinstance(payload.get("error"), Mapping):  # an error envelope on a 200 (some proxies do this)
        code = payload["error"].get("code")
        status = code if isinstance(code, int) and code >= 400 else 500
        raise classify_error(
            status, payload, provider=provider, day_reset_hour_utc=config.day_reset_hour_utc, now=now
        )
    candidates = payload.get("candidates")
    feedback = payload.get("promptFeedback")
    if not candidates and isinstance(feedback, Mapping) and feedback.get("blockReason"):
        extra = feedback.get("blockReasonMessage")
        raise ContentBlocked(
            f"prompt blocked: {feedback['blockReason']}"
            + (f": {_first_sentence(str(extra))}" if extra else ""),
            **kw,
        )
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], Mapping):
        raise ProviderUnavailable("answer has no candidates", **malformed)
    cand = candidates[0]
    finish = str(cand.get("finishReason") or "")
    if finish in IMAGE_BLOCK_REASONS:
        why = cand.get("finishMessage")
        reason = f"image blocked: {finish}" + (f": {_first_sentence(str(why))}" if why else "")
        raise ContentBlocked(reason, **kw)
    content = cand.get("content")
    raw_parts = content.get("parts") if isinstance(content, Mapping) else None
    parts = [p for p in raw_parts if isinstance(p, Mapping)] if isinstance(raw_parts, list) else []
    final = [p for p in parts if _inline(p) is not None and p.get("thought") is not True]
    if not final:
        texts = [str(p["text"]) for p in parts if p.get("text") and p.get("thought") is not True]
        if texts and finish in ("", "STOP", "FINISH_REASON_UNSPECIFIED"):
            answer = short_text(" ".join(texts), 200)
            raise ContentBlocked(f"no image: model answered with text: {answer}", **kw)
        raise ProviderUnavailable(
            f"answer has no image (finishReason {finish or 'missing'})",
            error_class="no_image",
            maybe_billed=True,
            **kw,
        )
    inline = _inline(final[-1]) or {}
    mime = str(inline.get("mimeType") or inline.get("mime_type") or "")
    data = inline.get("data")
    usage = payload.get("usageMetadata")
    usage = dict(usage) if isinstance(usage, Mapping) else {}
    cost, source = cost_or_list(config, usage, request.resolution, len(request.references), batch=batch)
    try:
        if not isinstance(data, str):
            raise BadImage("inlineData has no data", provider=provider)
        raw = decode_b64(data, provider=provider)
        validate_image(raw, mime, request.resolution, request.aspect_ratio, policy="exact", provider=provider)
    except BadImage as e:
        e.http_status, e.maybe_billed, e.cost_usd = http_status, True, cost
        raise
    return ImageResult(
        data=raw,
        mime_type=image_mime(raw) or mime,
        cost_usd=cost,
        cost_source=source,
        http_status=http_status,
        usage=usage,
        remote_id=_str_or_none(payload.get("responseId")),
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def auth_headers(config: ProviderConfig, api_key: str | None) -> dict[str, str]:
    if not api_key:
        return {}
    if config.auth == "bearer":
        return {"Authorization": f"Bearer {api_key}"}
    return {"x-goog-api-key": api_key}


class GeminiProvider(HttpAdapter):
    """One image per generateContent call. `batch_prices` prices usage at the batch rates (for the batch
    client's results)."""

    def __init__(
        self,
        config: ProviderConfig,
        api_key: str | None,
        client: httpx.Client,
        *,
        region: str | None = None,
        batch_prices: bool = False,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__(config, api_key, client, region=region, clock=clock)
        self._batch = batch_prices
        self.url = f"{self.base_url}/v1beta/models/{model_path(config.model)}:generateContent"

    def __repr__(self) -> str:
        return f"GeminiProvider(name={self.name!r}, url={self.url!r})"

    def generate(self, request: ImageRequest, hooks: CallHooks | None = None) -> ImageResult:
        with self.scrubbing():
            require_price(self.config, request.resolution)
            headers = {"Content-Type": "application/json", **auth_headers(self.config, self._key)}
            resp = self.request(
                "POST",
                self.url,
                content=json.dumps(request_body(request)),
                headers=headers,
                deadline=self.call_deadline(),
            )
            return self.handle_response(resp, request)

    def handle_response(self, resp: httpx.Response, request: ImageRequest) -> ImageResult:
        now = self._clock()
        payload = self.json_of(resp)
        if resp.status_code != 200:
            raise classify_error(
                resp.status_code,
                payload,
                provider=self.name,
                headers=resp.headers,
                day_reset_hour_utc=self.config.day_reset_hour_utc,
                now=now,
                text=resp.text[:MAX_MESSAGE_CHARS] if payload is None else "",
            )
        if payload is None:
            raise ProviderUnavailable(
                "answer is not JSON",
                provider=self.name,
                http_status=200,
                error_class="malformed",
                maybe_billed=True,
            )
        return parse_generate_response(payload, request, config=self.config, batch=self._batch, now=now)
