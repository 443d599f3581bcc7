"""OpenAI Images API format (Kie.ai, laozhang.ai's OpenAI format, AIML API): PROVIDERS.md §5.

`POST /v1/images/generations` (JSON) without references, `POST /v1/images/edits` (multipart, one `image[]`
part per reference) with them. The size goes out as `size: "WxH"` from the SIZES table plus the resellers'
extension fields `aspect_ratio`, `resolution` and `image_size`. Answers in `b64_json` or `url` (downloaded
at once: URLs expire). Resellers bill a flat price per image, so cost comes from the config's table.

Errors, classified here once:

    429 insufficient_quota                  QuotaExhausted (provider paused)
    429 other (rate_limit_exceeded)         RateLimited(retry-after-ms, then retry-after: seconds or date)
    400 moderation_blocked / content_policy ContentBlocked("moderation blocked (<stage>): <message>")
    other 400, 404, 422                     InvalidRequest(error.message)
    401, 403                                AuthError;  402  QuotaExhausted
    5xx, 408, 409; LiteLLM string codes ("500", "503") in the envelope   ProviderUnavailable
    200 not JSON / no data item             ProviderUnavailable(error_class="malformed", maybe_billed)
    200 with "data": []                     ContentBlocked("no image: ...") (a refusal)
    bad base64 / image / size / download    BadImage / ProviderUnavailable(maybe_billed, cost_usd)

Size check: the "ratio" policy of pipeline.providers.images (resellers may resize).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from pipeline.clock import Clock, utcnow
from pipeline.config import ProviderConfig
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
from pipeline.providers.adapter import HttpAdapter
from pipeline.providers.base import CallHooks, ImageRequest, ImageResult, expected_size
from pipeline.providers.http import MAX_MESSAGE_CHARS, decode_data_url, retry_after_s, short_text
from pipeline.providers.images import decode_b64, image_mime, validate_image
from pipeline.providers.pricing import PRICE_TABLE, require_price, table_cost

#: error codes that mean the safety system refused: terminal, never retried
MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


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
    if "insufficient_quota" in (code, etype):
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
    ) -> None:
        super().__init__(config, api_key, client, region=region, clock=clock)
        base = self.base_url
        self.base_url = base if base.endswith("/v1") else f"{base}/v1"

    def generate(self, request: ImageRequest, hooks: CallHooks | None = None) -> ImageResult:
        with self.scrubbing():
            return self._generate(request)

    def fields(self, request: ImageRequest) -> dict[str, Any]:
        """The request fields common to generations and edits."""
        width, height = expected_size(request.aspect_ratio, request.resolution)
        return {
            "model": self.config.model,
            "prompt": request.prompt,
            "n": 1,
            "size": f"{width}x{height}",
            "aspect_ratio": request.aspect_ratio,
            "resolution": request.resolution,
            "image_size": request.resolution,
            "response_format": self.config.response_format,
            "output_format": _output_format(request.output_format),
        }

    def _generate(self, request: ImageRequest) -> ImageResult:
        require_price(self.config, request.resolution, usage_ok=False)
        headers = {**self._auth(), "Accept": "application/json"}
        fields = self.fields(request)
        deadline = self.call_deadline()
        if request.references:
            files = [
                ("image[]", (f"reference-{i}.{_EXT.get(ref.mime_type, 'png')}", ref.data, ref.mime_type))
                for i, ref in enumerate(request.references)
            ]
            data = {k: str(v) for k, v in fields.items()}
            resp = self.request(
                "POST", f"{self.base_url}/images/edits", data=data, files=files, headers=headers, deadline=deadline
            )
        else:
            resp = self.request(
                "POST", f"{self.base_url}/images/generations", json=fields, headers=headers, deadline=deadline
            )
        return self.handle_response(resp, request, deadline)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def handle_response(
        self, resp: httpx.Response, request: ImageRequest, deadline: float | None = None
    ) -> ImageResult:
        now = self._clock()
        payload = self.json_of(resp)
        if resp.status_code != 200 or (
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
        return ImageResult(
            data=raw,
            mime_type=image_mime(raw) or mime,
            cost_usd=cost,
            cost_source=PRICE_TABLE,
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
