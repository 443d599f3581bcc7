"""Gemini `generateContent` (Google official, laozhang.ai's native endpoint, the sandbox): PROVIDERS.md §1-2.

The wire format lives in three functions the batch client reuses: `request_body` (one request),
`parse_generate_response` (one answer -> ImageResult or an error) and `classify_error` (an error envelope
-> the error tree). `GeminiProvider` adds the HTTP call. Errors are classified once: HTTP error answers
in pipeline.providers.gemini_errors (its docstring has the table), answers of HTTP 200 in gemini_answer:

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
import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Unpack

import httpx

from pipeline.config import ProviderConfig
from pipeline.errors import (
    DailyQuotaExceeded,
    InvalidRequest,
    ProviderError,
    ProviderUnavailable,
)
from pipeline.providers.adapter import AdapterOptions, HttpAdapter
from pipeline.providers.base import CallHooks, ImageRequest, ImageResult
from pipeline.providers.gemini_answer import parse_generate_response
from pipeline.providers.gemini_errors import classify_error, details
from pipeline.providers.http import MAX_MESSAGE_CHARS
from pipeline.providers.pricing import require_price

#: what we ask for; TEXT lets the model explain a refusal instead of a bare NO_IMAGE
RESPONSE_MODALITIES = ("TEXT", "IMAGE")
#: the Flex tier's value of generateContent's top-level `serviceTier` (python-genai models.py
#: _GenerateContentConfig_to_mldev: setv(parent_object, ['serviceTier'], ...); enum types.ServiceTier.FLEX)
FLEX = "flex"
#: error class of a 400 that refuses the Flex tier for the model (the adapter then uses the standard tier)
FLEX_REFUSED = "flex_unsupported"
#: wait before retrying a shed Flex request when the answer gives no delay
FLEX_SHED_WAIT_S = 30.0
_TIER_WORDS = re.compile(r"service[ _]?tier|\bflex\b", re.IGNORECASE)
log = logging.getLogger("pipeline.providers.gemini")


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


def auth_headers(config: ProviderConfig, api_key: str | None) -> dict[str, str]:
    if not api_key:
        return {}
    if config.auth == "bearer":
        return {"Authorization": f"Bearer {api_key}"}
    return {"x-goog-api-key": api_key}


class GeminiProvider(HttpAdapter):
    """One image per generateContent call. `batch_prices` prices usage at the batch rates (for the batch
    client's results). With `service_tier: flex` the call asks for Google's Flex tier (`serviceTier: "flex"`)
    and usage is priced at half the standard rates (the batch rates); a shed call (503, or a 429 without a
    quota violation) is `shed`, retryable and not a fault of the provider; a 400 refusing the tier for the
    model makes this adapter fall back to the standard tier (at standard rates) for the rest of its life."""

    def __init__(
        self,
        config: ProviderConfig,
        api_key: str | None,
        client: httpx.Client,
        *,
        batch_prices: bool = False,
        **options: Unpack[AdapterOptions],
    ) -> None:
        super().__init__(config, api_key, client, **options)
        self._batch = batch_prices
        self.flex = config.service_tier == "flex"
        self.url = f"{self.base_url}/v1beta/models/{model_path(config.model)}:generateContent"

    def __repr__(self) -> str:
        return f"GeminiProvider(name={self.name!r}, url={self.url!r})"

    def generate(self, request: ImageRequest, hooks: CallHooks | None = None) -> ImageResult:
        with self.scrubbing():
            require_price(self.config, request.resolution)
            if not self.flex:
                return self._call(request, flex=False)
            try:
                return self._call(request, flex=True)
            except InvalidRequest as e:
                if e.error_class != FLEX_REFUSED:
                    raise
                self.flex = False  # the model refuses the tier: standard from now on (the refusal is not billed)
                log.warning("provider %s: %s; falling back to the standard tier", self.name, e.message)
                result = self._call(request, flex=False)
                return replace(result, usage={**result.usage, "service_tier_fallback": "standard"})

    def _call(self, request: ImageRequest, *, flex: bool) -> ImageResult:
        headers = {"Content-Type": "application/json", **auth_headers(self.config, self._key)}
        body = request_body(request)
        if flex:
            body["serviceTier"] = FLEX
        deadline = self.call_deadline()
        resp = self.request("POST", self.url, content=json.dumps(body), headers=headers, deadline=deadline)
        return self.handle_response(resp, request, flex=flex, deadline=deadline)

    def handle_response(
        self, resp: httpx.Response, request: ImageRequest, *, flex: bool = False, deadline: float | None = None
    ) -> ImageResult:
        now = self._clock()
        payload = self.json_of(resp)
        if resp.status_code != 200:
            err = classify_error(
                resp.status_code,
                payload,
                provider=self.name,
                headers=resp.headers,
                day_reset_hour_utc=self.config.day_reset_hour_utc,
                now=now,
                text=resp.text[:MAX_MESSAGE_CHARS] if payload is None else "",
            )
            raise flex_error(err, payload) if flex else err
        if payload is None:
            raise ProviderUnavailable(
                "answer is not JSON",
                provider=self.name,
                http_status=200,
                error_class="malformed",
                maybe_billed=True,
            )
        return parse_generate_response(
            payload, request, config=self.config, batch=self._batch or flex, now=now,
            fetch=lambda url: self.download(url, deadline=deadline),
        )


def flex_error(err: ProviderError, payload: Any) -> ProviderError:
    """A Flex-tier error as the pipeline treats it. Flex is best effort: Google may shed a request under load
    (https://ai.google.dev/gemini-api/docs/flex-inference). A 503, or a 429 that names no quota violation, is
    a shed: retryable after FLEX_SHED_WAIT_S (or the answer's delay), error class `shed`, which neither cuts
    the admission gate's rate nor counts towards the provider's circuit breaker. A 400 naming the service
    tier is the model refusing Flex (FLEX_REFUSED). Quota 429s and everything else keep their class."""
    status = err.http_status or 0
    quota = isinstance(payload, Mapping) and _quota_violation(payload)
    if status == 503 or (status == 429 and not quota and not isinstance(err, DailyQuotaExceeded)):
        return ProviderUnavailable(
            f"flex request shed: {err.message}",
            provider=err.provider,
            http_status=status,
            error_class="shed",
            retry_after_s=err.retry_after_s if err.retry_after_s is not None else FLEX_SHED_WAIT_S,
        )
    if status == 400 and _TIER_WORDS.search(err.message):
        return InvalidRequest(err.message, provider=err.provider, http_status=400, error_class=FLEX_REFUSED)
    return err


def _quota_violation(payload: Mapping[str, Any]) -> bool:
    inner = payload.get("error")
    return isinstance(inner, Mapping) and any(
        "QuotaFailure" in str(d.get("@type", "")) for d in details(inner)
    )
