"""Gemini wire format (PROVIDERS.md §1-2): request parsing, response bodies and Google error envelopes.

Shared by generateContent and the batch API. camelCase and snake_case keys are both accepted, as
Google's proto-JSON parser does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from pipeline.providers.base import ASPECT_RATIOS, RESOLUTIONS
from pipeline.sandbox.faults import SPURIOUS_RETRY_S, Fault
from pipeline.sandbox.generation import (
    MAX_REFERENCE_IMAGES,
    Generated,
    GenRequest,
    image_ratio,
    sha256_hex,
    truncated_b64,
)

#: keys accepted in generationConfig.imageConfig on the Gemini API (the others are Vertex only)
IMAGE_CONFIG_KEYS = {
    "aspectRatio",
    "aspect_ratio",
    "imageSize",
    "image_size",
    "personGeneration",
    "person_generation",
}
#: ServiceTier values (python-genai types.ServiceTier: unspecified, flex, standard, priority)
SERVICE_TIERS = ("unspecified", "standard", "flex", "priority")
#: a bare 429 without quota details, as public clients report it (googleapis/python-genai#2065); the sandbox
#: answers a shed Flex request with it (Google documents Flex as best effort, not the shape of a shed)
EXHAUSTED_MESSAGE = "Resource has been exhausted (e.g. check quota)."
RATE_LIMIT_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information on "
    "this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
INTERNAL_MESSAGE = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)
OVERLOADED_MESSAGE = "The model is overloaded. Please try again later."
KEY_INVALID_MESSAGE = "API key not valid. Please pass a valid API key."
NO_KEY_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or "
    "other form of API consumer identity to call this API."
)
IMAGE_SAFETY_MESSAGE = (
    "Unable to show the generated image. The image was filtered out because it violated Google's "
    "[Generative AI Prohibited Use policy](https://policies.google.com/terms/generative-ai/use-policy). "
    "You will not be charged for blocked images. Try rephrasing the prompt."
)
REFUSAL_TEXT = "I'm unable to create that image. Please try a different description."
THOUGHT_TEXT = "**Composing the scene**\n\nI'm laying out the subject, the light and the text asked for."


class BadRequest(ValueError):
    """The request is invalid: 400 INVALID_ARGUMENT with this message."""


@dataclass(frozen=True)
class ParsedRequest:
    gen: GenRequest
    modalities: tuple[str, ...]
    #: the request's top-level `serviceTier` ("flex" asks for the Flex tier; python-genai sends it there)
    service_tier: str = "standard"


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj[camel] if camel in obj else obj.get(snake)


def _decode_b64(data: Any, where: str) -> bytes:
    if not isinstance(data, str):
        raise BadRequest(f"Invalid value at '{where}' (TYPE_BYTES), expected a base64 string")
    padded = data + "=" * (-len(data) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except binascii.Error:
        try:
            return base64.b64decode(padded, altchars=b"-_", validate=True)
        except binascii.Error:
            raise BadRequest(f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed") from None


def parse_generate(body: Any, mime_type: str) -> ParsedRequest:
    """A GenerateContentRequest into a GenRequest. Raises BadRequest with Google-like messages."""
    if not isinstance(body, dict):
        raise BadRequest("Invalid JSON payload received. Expected an object.")
    contents = body.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    texts: list[str] = []
    refs: list[str] = []
    first_ratio: str | None = None
    for ci, content in enumerate(contents):
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
            raise BadRequest(f"* GenerateContentRequest.contents[{ci}].parts: parts must not be empty")
        if content.get("role") == "model":
            continue
        for pi, part in enumerate(content["parts"]):
            if not isinstance(part, dict):
                raise BadRequest(f"Invalid value at 'contents[{ci}].parts[{pi}]': expected an object")
            if isinstance(part.get("text"), str) and not part.get("thought"):
                texts.append(part["text"])
            inline = _get(part, "inlineData", "inline_data")
            file_data = _get(part, "fileData", "file_data")
            if isinstance(inline, dict):
                data = _decode_b64(inline.get("data"), f"contents[{ci}].parts[{pi}].inline_data.data")
                refs.append(sha256_hex(data))
                if first_ratio is None:
                    first_ratio = image_ratio(data)
            elif isinstance(file_data, dict):
                uri = _get(file_data, "fileUri", "file_uri")
                refs.append(hashlib.sha256(str(uri).encode()).hexdigest())
    if len(refs) > MAX_REFERENCE_IMAGES:
        raise BadRequest(
            f"Too many images in the request: {len(refs)}. The model accepts at most {MAX_REFERENCE_IMAGES}."
        )
    prompt = "\n".join(texts).strip()
    if not prompt and not refs:
        raise BadRequest("* GenerateContentRequest.contents[0].parts: contents.parts must not be empty")
    config = _get(body, "generationConfig", "generation_config") or {}
    if not isinstance(config, dict):
        raise BadRequest("Invalid value at 'generation_config': expected an object")
    modalities = _get(config, "responseModalities", "response_modalities") or ["TEXT", "IMAGE"]
    if not isinstance(modalities, list) or not all(m in ("TEXT", "IMAGE") for m in modalities):
        raise BadRequest("Invalid value at 'generation_config.response_modalities': expected TEXT or IMAGE")
    image_config = _get(config, "imageConfig", "image_config") or {}
    if not isinstance(image_config, dict):
        raise BadRequest("Invalid value at 'generation_config.image_config': expected an object")
    unknown = sorted(set(image_config) - IMAGE_CONFIG_KEYS)
    if unknown:
        raise BadRequest(
            f'Invalid JSON payload received. Unknown name "{unknown[0]}" at '
            "'generation_config.image_config': Cannot find field."
        )
    ratio = _get(image_config, "aspectRatio", "aspect_ratio") or first_ratio or "1:1"
    if ratio not in ASPECT_RATIOS:
        raise BadRequest(
            f"* GenerateContentRequest.generation_config.image_config.aspect_ratio: unsupported aspect ratio "
            f"{ratio!r}. Supported: {', '.join(ASPECT_RATIOS)}."
        )
    size = _get(image_config, "imageSize", "image_size") or "1K"
    if size not in RESOLUTIONS:
        raise BadRequest(
            f"* GenerateContentRequest.generation_config.image_config.image_size: unsupported image size "
            f"{size!r}. Supported values: 1K, 2K, 4K (uppercase K)."
        )
    tier = str(_get(body, "serviceTier", "service_tier") or "standard").lower()
    if tier not in SERVICE_TIERS:
        raise BadRequest(f"Invalid value at 'service_tier' ({tier!r}): expected one of {', '.join(SERVICE_TIERS)}")
    return ParsedRequest(GenRequest(prompt, ratio, size, mime_type, tuple(refs)), tuple(modalities), tier)


# -- response bodies -----------------------------------------------------------------------------------------


def _signature(fingerprint: str) -> str:
    return base64.b64encode(hashlib.sha256(f"sig:{fingerprint}".encode()).digest() * 2).decode()


def response_body(
    gen: Generated, parsed: ParsedRequest, model: str, response_id: str, *, thought_parts: bool
) -> dict[str, Any]:
    """The GenerateContentResponse for a generation: an image, a block (A or B) or a text refusal."""
    usage = gen.usage
    head = {"modelVersion": model, "responseId": response_id}
    if gen.fault is Fault.BLOCK_PROMPT:
        return {
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {
                "promptTokenCount": usage.prompt_tokens,
                "totalTokenCount": usage.prompt_tokens,
                "promptTokensDetails": usage.prompt_details(),
            },
            **head,
        }
    if gen.fault is Fault.BLOCK_IMAGE:
        candidate: dict[str, Any] = {
            "content": {},
            "finishReason": "IMAGE_SAFETY",
            "index": 0,
            "finishMessage": IMAGE_SAFETY_MESSAGE,
        }
        meta = {
            "promptTokenCount": usage.prompt_tokens,
            "candidatesTokenCount": 0,
            "totalTokenCount": usage.prompt_tokens + usage.thoughts_tokens,
            "promptTokensDetails": usage.prompt_details(),
            "thoughtsTokenCount": usage.thoughts_tokens,
        }
        return {"candidates": [candidate], "usageMetadata": meta, **head}
    if gen.fault is Fault.REFUSE or gen.image is None:
        refusal_tokens = len(REFUSAL_TEXT) // 4
        candidate = {
            "content": {"parts": [{"text": REFUSAL_TEXT}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
        meta = {
            "promptTokenCount": usage.prompt_tokens,
            "candidatesTokenCount": refusal_tokens,
            "totalTokenCount": usage.prompt_tokens + refusal_tokens + usage.thoughts_tokens,
            "promptTokensDetails": usage.prompt_details(),
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": refusal_tokens}],
            "thoughtsTokenCount": usage.thoughts_tokens,
        }
        return {"candidates": [candidate], "usageMetadata": meta, **head}
    mime = gen.request.mime_type
    data = truncated_b64(gen.image) if gen.fault is Fault.TRUNCATED else base64.b64encode(gen.image).decode()
    parts: list[dict[str, Any]] = []
    if thought_parts:
        parts.append({"text": THOUGHT_TEXT, "thought": True})
    if gen.interim is not None:
        parts.append(
            {
                "inlineData": {"mimeType": mime, "data": base64.b64encode(gen.interim).decode()},
                "thought": True,
            }
        )
    if "TEXT" in parsed.modalities:
        parts.append({"text": "Here is the image."})
    parts.append(
        {
            "inlineData": {"mimeType": mime, "data": data},
            "thoughtSignature": _signature(gen.request.fingerprint),
        }
    )
    candidate = {"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}
    return {"candidates": [candidate], "usageMetadata": usage.gemini_json(), **head}


# -- errors --------------------------------------------------------------------------------------------------


def error_body(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def retry_delay(seconds: float) -> str:
    """A protobuf Duration string: '1.5s', '47s'."""
    text = f"{max(seconds, 0.001):.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def quota_body(
    model: str, *, per_day: bool, limit: int | None, retry_after_s: float | None
) -> dict[str, Any]:
    """429 RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo, as Google sends it (no Retry-After header)."""
    period = "Day" if per_day else "Minute"
    violation: dict[str, Any] = {
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
        "quotaId": f"GenerateRequestsPer{period}PerProjectPerModel",
        "quotaDimensions": {"location": "global", "model": model},
    }
    if limit is not None:
        violation["quotaValue"] = str(limit)
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
    ]
    message = RATE_LIMIT_MESSAGE
    if retry_after_s is not None:
        delay = retry_delay(retry_after_s)
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
        message += f" Please retry in {delay}."
    return error_body(429, "RESOURCE_EXHAUSTED", message, details)


def key_invalid_body() -> dict[str, Any]:
    return error_body(
        400,
        "INVALID_ARGUMENT",
        KEY_INVALID_MESSAGE,
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": KEY_INVALID_MESSAGE,
            },
        ],
    )


def no_key_body() -> dict[str, Any]:
    return error_body(403, "PERMISSION_DENIED", NO_KEY_MESSAGE)


def fault_error(
    fault: Fault, model: str, rpm: int | None, rpd: int | None, day_reset_s: float
) -> tuple[int, dict[str, Any]]:
    """Status and body for an error fault."""
    if fault is Fault.HTTP_500:
        return 500, error_body(500, "INTERNAL", INTERNAL_MESSAGE)
    if fault is Fault.HTTP_503:
        return 503, error_body(503, "UNAVAILABLE", OVERLOADED_MESSAGE)
    if fault is Fault.RATE_LIMIT:
        return 429, quota_body(model, per_day=False, limit=rpm, retry_after_s=SPURIOUS_RETRY_S)
    if fault is Fault.DAILY_QUOTA:
        return 429, quota_body(model, per_day=True, limit=rpd or 1000, retry_after_s=day_reset_s)
    if fault is Fault.INSUFFICIENT_QUOTA:
        return 429, quota_body(model, per_day=True, limit=0, retry_after_s=None)
    if fault is Fault.AUTH:
        return 400, key_invalid_body()
    if fault is Fault.SHED:
        return 429, error_body(429, "RESOURCE_EXHAUSTED", EXHAUSTED_MESSAGE)
    raise ValueError(f"not an error fault: {fault}")
