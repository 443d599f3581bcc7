"""The images API family (OpenAI's /v1/images, laozhang.ai's OpenAI format, AIML API's JSON dialect).

What goes out is the preset's dialect (pipeline.dialect.ImagesDialect, data in the preset): OpenAI's
own fields by default (`size: "WxH"` only for sizes OpenAI documents, `n`, `response_format`,
`output_format`; references as multipart `image[]` parts to /v1/images/edits), or a reseller's documented
names (AIML: `aspect_ratio`, `resolution`, `num_images`, references as `image_urls` data URLs in JSON to
/v1/images/generations with the edit model). A request the dialect cannot express (4K through a `size`
field, an oversized inline reference) is refused before anything is sent (and at validate time:
pipeline.providers.checks). Answers in `b64_json` or `url` (downloaded at once: URLs expire). Resellers bill
a flat price per image, so cost comes from the config's table, unless the answer states what it charged
(AIML's `meta.usage.usd_spent`).

Errors, classified here once:

    429 insufficient_quota                  QuotaExhausted (provider paused)
    429 other (rate_limit_exceeded)         RateLimited(retry-after-ms, then retry-after: seconds or date)
    400 moderation_blocked / content_policy ContentBlocked("moderation blocked (<stage>): <message>")
    other 400, 404, 422                     InvalidRequest(error.message)
    402/403 naming credits (AIML's 403)     QuotaExhausted (provider paused)
    401, 403                                AuthError;  402  QuotaExhausted
    errors as {"error": {...}} (OpenAI) or top-level {message, statusCode, ...} (AIML): the same rules
    5xx, 408, 409; LiteLLM string codes ("500", "503") in the envelope   ProviderUnavailable
    200 not JSON / no data item             ProviderUnavailable(error_class="malformed", maybe_billed)
    200 with "data": []                     ContentBlocked("no image: ...") (a refusal)
    bad base64 / image / size / download    BadImage / ProviderUnavailable(maybe_billed, cost_usd)

Size check: the "ratio" policy of pipeline.providers.images (resellers may resize).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from pipeline.clock import Clock, utcnow
from pipeline.config import ProviderConfig
from pipeline.dialect import size_fits
from pipeline.errors import (
    AuthError,
    BadImage,
    ContentBlocked,
    InvalidRequest,
    ProviderError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pipeline.providers.adapter import HttpAdapter, OutputGuard
from pipeline.providers.base import CallHooks, ImageRequest, ImageResult, expected_size
from pipeline.providers.http import MAX_MESSAGE_CHARS, decode_data_url, retry_after_s, short_text
from pipeline.providers.images import decode_b64, image_mime, validate_image
from pipeline.providers.pricing import PRICE_TABLE, USAGE, require_price, table_cost

#: error codes that mean the safety system refused: terminal, never retried
MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


def data_url(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


def dialect_refusal(
    config: ProviderConfig, resolution: str, aspect_ratio: str, reference_sizes: list[int]
) -> str | None:
    """Why the preset's dialect cannot send this request (checked at validate time and again before a call),
    or None. A `size` dialect cannot ask for sizes no provider documents (4K); a JSON dialect sends
    references inline only up to its documented or chosen size."""
    d = config.images
    where = f"provider {config.name}"
    if resolution not in d.resolutions:
        return f"{where} cannot make {resolution} images (its API offers {', '.join(d.resolutions)})"
    if d.size_field and not d.resolution_field and not size_fits(*expected_size(aspect_ratio, resolution)):
        w, h = expected_size(aspect_ratio, resolution)
        return (f"{where} speaks OpenAI's images API, whose size field documents no {w}x{h} ({resolution}) "
                "output: use a provider with a resolution field (e.g. the gemini-format preset) for 4K")
    if len(reference_sizes) > d.max_references:
        return f"{where} takes at most {d.max_references} references"
    limit = d.max_inline_reference_bytes
    if limit is not None and any(n > limit for n in reference_sizes):
        return (f"{where} gets references inline as data URLs, at most {limit} bytes each: shrink the "
                "reference, or use another provider (URLs to fetch need presigned storage URLs)")
    return None


def _output_format(fmt: str) -> str:
    fmt = fmt.lower()
    return {"jpg": "jpeg"}.get(fmt, fmt) if fmt in ("png", "jpg", "jpeg", "webp") else "png"


def classify_error(
    status: int, payload: Any, *, provider: str, headers: Mapping[str, str], now: datetime, text: str = ""
) -> ProviderError:
    """An OpenAI-format error answer as the right error (also used for an error envelope on a 200)."""
    err: Mapping[str, Any] = {}
    if isinstance(payload, Mapping):
        inner = payload.get("error", payload)
        err = inner if isinstance(inner, Mapping) else {"message": str(inner)}
    code = str(err.get("code") or "")
    etype = str(err.get("type") or "")
    message = short_text(err.get("message") or err.get("detail") or text or "no message")
    # LiteLLM-style envelopes carry the upstream status as a string code ("500") even on a 200 or a 400
    if code.isdigit() and (status < 400 or int(code) >= 500 or int(code) == 429):
        status = int(code)
    label = f"HTTP {status}{' ' + code if code and not code.isdigit() else ''}: {message}"
    kw: dict[str, Any] = {"provider": provider, "http_status": status}
    if "insufficient_quota" in (code, etype) or (status in (402, 403) and "credit" in message.lower()):
        # OpenAI's insufficient_quota; AIML's 403 "You've run out of credits" (docs.aimlapi.com errors 4xx)
        return QuotaExhausted(label, **kw)
    if status == 429:
        return RateLimited(label, retry_after_s=retry_after_s(headers, now), **kw)
    if code in MODERATION_CODES or etype in MODERATION_CODES:
        details = err.get("moderation_details")
        stage = details.get("moderation_stage") if isinstance(details, Mapping) else None
        cats = details.get("categories") if isinstance(details, Mapping) else None
        where = f" ({stage})" if stage else ""
        what = f" [{', '.join(map(str, cats))}]" if isinstance(cats, list) and cats else ""
        return ContentBlocked(f"moderation blocked{where}: {message}{what}", **kw)
    if status >= 500 or status in (408, 409):
        return ProviderUnavailable(label, retry_after_s=retry_after_s(headers, now), **kw)
    if status in (401, 403) or code == "invalid_api_key":
        return AuthError(label, **kw)
    if status == 402:
        return QuotaExhausted(label, **kw)
    return InvalidRequest(label, **kw)


class OpenAIImagesProvider(HttpAdapter):
    """One image per call through an OpenAI-compatible images endpoint."""

    def __init__(
        self,
        config: ProviderConfig,
        api_key: str | None,
        client: httpx.Client,
        *,
        region: str | None = None,
        clock: Clock = utcnow,
        output_guard: OutputGuard | None = None,
    ) -> None:
        super().__init__(config, api_key, client, region=region, clock=clock, output_guard=output_guard)
        base = self.base_url
        self.base_url = base if base.endswith("/v1") else f"{base}/v1"

    def generate(self, request: ImageRequest, hooks: CallHooks | None = None) -> ImageResult:
        with self.scrubbing():
            return self._generate(request)

    def fields(self, request: ImageRequest) -> dict[str, Any]:
        """The JSON (or form) fields of one call, named as the preset's dialect names them."""
        d = self.config.images
        fields: dict[str, Any] = {
            "model": (d.edit_model or self.config.model) if request.references else self.config.model,
            "prompt": request.prompt,
            d.count_field: 1,
        }
        if d.size_field:
            width, height = expected_size(request.aspect_ratio, request.resolution)
            fields[d.size_field] = f"{width}x{height}"
        if d.aspect_ratio_field:
            fields[d.aspect_ratio_field] = request.aspect_ratio
        if d.resolution_field:
            fields[d.resolution_field] = request.resolution
        if d.response_format_field:
            fields[d.response_format_field] = self.config.response_format
        if d.output_format_field:
            fields[d.output_format_field] = _output_format(request.output_format)
        return fields

    def _generate(self, request: ImageRequest) -> ImageResult:
        require_price(self.config, request.resolution, usage_ok=False)
        refusal = dialect_refusal(self.config, request.resolution, request.aspect_ratio,
                                  [len(r.data) for r in request.references])
        if refusal:  # nothing is sent: the dialect cannot ask for this
            raise InvalidRequest(refusal, provider=self.name)
        d = self.config.images
        headers = {**self._auth(), "Accept": "application/json"}
        fields = self.fields(request)
        deadline = self.call_deadline()
        if request.references and d.edits_encoding == "multipart":
            files = [
                (d.reference_field, (f"reference-{i}.{_EXT.get(ref.mime_type, 'png')}", ref.data, ref.mime_type))
                for i, ref in enumerate(request.references)
            ]
            data = {k: str(v) for k, v in fields.items()}
            url = f"{self.base_url}{d.edits_path or d.generations_path}"
            resp = self.request("POST", url, data=data, files=files, headers=headers, deadline=deadline)
        else:
            if request.references:
                fields[d.reference_field] = [data_url(ref.data, ref.mime_type) for ref in request.references]
            path = d.edits_path if request.references and d.edits_path else d.generations_path
            resp = self.request("POST", f"{self.base_url}{path}", json=fields, headers=headers, deadline=deadline)
        return self.handle_response(resp, request, deadline)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def handle_response(
        self, resp: httpx.Response, request: ImageRequest, deadline: float | None = None
    ) -> ImageResult:
        now = self._clock()
        payload = self.json_of(resp)
        if resp.status_code not in (200, 201) or (
            isinstance(payload, Mapping) and isinstance(payload.get("error"), Mapping)
        ):
            raise classify_error(
                resp.status_code,
                payload,
                provider=self.name,
                headers=resp.headers,
                now=now,
                text=resp.text[:MAX_MESSAGE_CHARS] if payload is None else "",
            )
        kw: dict[str, Any] = {"provider": self.name, "http_status": 200}
        if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), list):
            raise ProviderUnavailable(
                "answer is not an images response", error_class="malformed", maybe_billed=True, **kw
            )
        items = [d for d in payload["data"] if isinstance(d, Mapping)]
        if not payload["data"]:
            raise ContentBlocked("no image: the provider answered without an image", **kw)
        if not items:
            raise ProviderUnavailable(
                "answer has no image item", error_class="malformed", maybe_billed=True, **kw
            )
        cost = table_cost(self.config, request.resolution, len(request.references))
        assert cost is not None  # require_price checked it before the call
        raw, mime = self._image_bytes(items[0], cost, deadline)
        try:
            validate_image(
                raw, mime, request.resolution, request.aspect_ratio, policy="ratio", provider=self.name
            )
        except BadImage as e:
            e.http_status, e.maybe_billed, e.cost_usd = 200, True, cost
            raise
        usage = payload.get("usage")
        meta = payload.get("meta")
        if isinstance(meta, Mapping) and isinstance(meta.get("usage"), Mapping):
            usage = meta["usage"]  # AIML: meta.usage {credits_used | tokens_used, usd_spent?}
        spent = usage.get("usd_spent") if isinstance(usage, Mapping) else None
        if isinstance(spent, int | float) and not isinstance(spent, bool) and spent > 0:
            cost, source = Decimal(str(spent)), USAGE  # the provider's own statement of what it charged
        else:
            source = PRICE_TABLE
        return ImageResult(
            data=raw,
            mime_type=image_mime(raw) or mime,
            cost_usd=cost,
            cost_source=source,
            usage=dict(usage) if isinstance(usage, Mapping) else {},
        )

    def _image_bytes(
        self, item: Mapping[str, Any], cost: Decimal, deadline: float | None
    ) -> tuple[bytes, str]:
        billed: dict[str, Any] = {
            "provider": self.name,
            "http_status": 200,
            "maybe_billed": True,
            "cost_usd": cost,
        }
        b64 = item.get("b64_json")
        url = item.get("url")
        if isinstance(b64, str) and b64:
            try:
                return decode_b64(b64, provider=self.name), ""
            except BadImage as e:
                raise BadImage(e.message, **billed) from None
        if isinstance(url, str) and url:
            inline = decode_data_url(url)
            if inline is not None:
                if not inline[0]:
                    raise BadImage("data URL is not valid base64", **billed)
                return inline
            try:
                return self.download(url, deadline=deadline or self.call_deadline())
            except ProviderUnavailable as e:
                raise ProviderUnavailable(e.message, error_class="download", **billed) from None
        raise ProviderUnavailable(
            "image item has neither b64_json nor url", error_class="malformed", **billed
        )
