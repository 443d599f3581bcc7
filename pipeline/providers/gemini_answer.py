"""One GenerateContentResponse as an image or an error (Google's API, Gemini-format resellers, batch items).

Where the image is:
- `inlineData` (or `inline_data`) in the last part that is not a thought: Google's answer (PROVIDERS.md §1);
- Gemini-format resellers also answer with the image in a text part: a `data:image/...;base64,` URL, or an
  http(s) URL, as a markdown image link (`![image](https://...)`) or as the whole text of the part. URLs are
  downloaded at once through `fetch` (the adapter's download: size-capped, the output guard checks the
  address as for references); without `fetch` (batch results) a URL answer is a fault.

Blocked calls: Google bills what an HTTP-200 answer reports in usageMetadata. Its billing FAQ exempts only
failed requests ("If your request fails with a 400 or 500 error, you won't be charged for the tokens used";
"What am I billed for? Input token count, Output token count ...", https://ai.google.dev/gemini-api/docs/billing),
and an IMAGE_SAFETY answer says "You will not be charged for blocked images". So a blocked call (prompt
blocked, image filtered, text-only refusal) costs its prompt tokens at the input rate and its thinking and
text output tokens at the text rate, and nothing for the image it did not make; the error carries that cost
(only for providers that bill Google's tokens: `cost_from_usage`). A reseller billing per call says in its price
table what such an answer costs (`prices.blocked`): laozhang.ai bills "HTTP 200 with no image" as one call
(https://docs.laozhang.ai/en/api-capabilities/image-billing-and-failures); without that key it costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pipeline.config import ProviderConfig
from pipeline.errors import BadImage, ContentBlocked, ProviderError, ProviderUnavailable
from pipeline.providers.base import ImageRequest, ImageResult
from pipeline.providers.gemini_errors import classify_error
from pipeline.providers.http import decode_data_url, short_text
from pipeline.providers.images import decode_b64, image_mime, validate_image
from pipeline.providers.pricing import BLOCKED_PRICE_KEY, blocked_call_cost, cost_or_list

#: finish reasons that mean "the image was withheld on purpose": terminal, never retried
IMAGE_BLOCK_REASONS = frozenset({
    "SAFETY", "RECITATION", "LANGUAGE", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "NO_IMAGE", "IMAGE_RECITATION", "IMAGE_OTHER",
})  # fmt: skip
_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,[A-Za-z0-9+/=_-]+")
_MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\((https?://[^\s)]+)\)")
_BARE_URL = re.compile(r"^\s*(https?://\S+)\s*$")

#: downloads an output URL: (bytes, MIME type); raises ProviderError
Fetch = Callable[[str], tuple[bytes, str]]


def first_sentence(text: str) -> str:
    m = re.match(r"^(.*?[.!?])(?:\s|$)", text.strip(), re.DOTALL)
    return short_text(m.group(1) if m else text, 200)


def _inline(part: Mapping[str, Any]) -> Mapping[str, Any] | None:
    data = part.get("inlineData", part.get("inline_data"))
    return data if isinstance(data, Mapping) else None


def image_in_text(text: str) -> str | None:
    """A data URL or an https image URL a reseller put in a text part, or None (plain text)."""
    m = _DATA_URL.search(text)
    if m:
        return m.group(0)
    m = _MARKDOWN_IMAGE.search(text) or _BARE_URL.match(text)
    return m.group(1) if m else None


def _blocked(message: str, kw: dict[str, Any], config: ProviderConfig, usage: Any, batch: bool) -> ContentBlocked:
    # Google's tokens, or a reseller's table: `blocked` where it bills an HTTP 200 without an image as a call
    by_table = config.prices.get(BLOCKED_PRICE_KEY)
    cost = blocked_call_cost(usage, batch=batch) if config.cost_from_usage else by_table
    return ContentBlocked(message, cost_usd=cost, **kw)


def parse_generate_response(
    payload: Any,
    request: ImageRequest,
    *,
    config: ProviderConfig,
    batch: bool,
    now: datetime,
    http_status: int = 200,
    fetch: Fetch | None = None,
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
    usage = payload.get("usageMetadata")
    usage = dict(usage) if isinstance(usage, Mapping) else {}
    candidates = payload.get("candidates")
    feedback = payload.get("promptFeedback")
    if not candidates and isinstance(feedback, Mapping) and feedback.get("blockReason"):
        extra = feedback.get("blockReasonMessage")
        why = f"prompt blocked: {feedback['blockReason']}" + (f": {first_sentence(str(extra))}" if extra else "")
        raise _blocked(why, kw, config, usage, batch)
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], Mapping):
        raise ProviderUnavailable("answer has no candidates", **malformed)
    cand = candidates[0]
    finish = str(cand.get("finishReason") or "")
    if finish in IMAGE_BLOCK_REASONS:
        message = cand.get("finishMessage")
        reason = f"image blocked: {finish}" + (f": {first_sentence(str(message))}" if message else "")
        raise _blocked(reason, kw, config, usage, batch)
    content = cand.get("content")
    raw_parts = content.get("parts") if isinstance(content, Mapping) else None
    parts = [p for p in raw_parts if isinstance(p, Mapping)] if isinstance(raw_parts, list) else []
    visible = [p for p in parts if p.get("thought") is not True]
    final = [p for p in visible if _inline(p) is not None]
    texts = [str(p["text"]) for p in visible if p.get("text")]
    in_text = next((s for s in (image_in_text(t) for t in reversed(texts)) if s), None) if not final else None
    if not final and in_text is None:
        if texts and finish in ("", "STOP", "FINISH_REASON_UNSPECIFIED"):
            answer = short_text(" ".join(texts), 200)
            raise _blocked(f"no image: model answered with text: {answer}", kw, config, usage, batch)
        raise ProviderUnavailable(
            f"answer has no image (finishReason {finish or 'missing'})",
            error_class="no_image",
            maybe_billed=True,
            **kw,
        )
    cost, source = cost_or_list(config, usage, request.resolution, len(request.references), batch=batch)
    try:
        if final:
            inline = _inline(final[-1]) or {}
            mime = str(inline.get("mimeType") or inline.get("mime_type") or "")
            b64 = inline.get("data")
            if not isinstance(b64, str):
                raise BadImage("inlineData has no data", provider=provider)
            raw = decode_b64(b64, provider=provider)
        else:
            assert in_text is not None
            raw, mime = _text_image(in_text, provider, fetch)
        validate_image(raw, mime, request.resolution, request.aspect_ratio, policy="exact", provider=provider)
    except ProviderError as e:  # the call was answered (and billed): whatever went wrong, say what it cost
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


def _text_image(source: str, provider: str, fetch: Fetch | None) -> tuple[bytes, str]:
    inline = decode_data_url(source)
    if inline is not None:
        if not inline[0]:
            raise BadImage("data URL in the answer is not valid base64", provider=provider)
        return inline
    if fetch is None:
        raise ProviderUnavailable("answer links its image, which cannot be downloaded here",
                                  provider=provider, error_class="download")
    return fetch(source)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
