"""Helpers for the provider tests: real images, configs, captured wire bodies (PROVIDERS.md) and a
recording httpx.MockTransport. The mock stands in for the provider, never for our own code."""

from __future__ import annotations

import base64
import copy
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

from pipeline.config import ProviderConfig
from pipeline.errors import ProviderError
from pipeline.presets import PRESETS
from pipeline.providers.base import SIZES

#: a fake key; every test checks it never shows in an error
KEY = "sk-test-SECRET-7f3a9c"


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buf, format=fmt)
    return buf.getvalue()


def sized(ratio: str = "1:1", resolution: str = "1K", fmt: str = "PNG") -> bytes:
    w, h = SIZES[ratio][resolution]
    return image_bytes(w, h, fmt)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def config(preset: str, **over: Any) -> ProviderConfig:
    data = copy.deepcopy(PRESETS[preset])
    data.update({"name": preset, "base_url": "https://provider.test"})
    data.update(over)
    return ProviderConfig.model_validate(data)


@dataclass
class Recorder:
    """A MockTransport handler that records requests and answers from a queue (or a function)."""

    answers: list[httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]] = field(
        default_factory=list
    )
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))

    def json_body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


def respond(
    status: int, body: Any = None, *, headers: dict[str, str] | None = None, text: str | None = None
) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def assert_no_key(err: BaseException) -> None:
    for text in (str(err), repr(err), " ".join(map(str, err.args))):
        assert KEY not in text
    if isinstance(err, ProviderError):
        assert KEY not in err.message


# --- Gemini captured bodies (PROVIDERS.md §1-2) ---------------------------------------------------------

USAGE = {
    "promptTokenCount": 32,
    "candidatesTokenCount": 1772,
    "totalTokenCount": 2552,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 32}],
    "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}],
    "thoughtsTokenCount": 748,
}


def gemini_ok(
    data: bytes,
    mime: str = "image/jpeg",
    *,
    usage: dict[str, Any] | None = USAGE,
    extra_parts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    parts = [
        *(extra_parts or []),
        {"inlineData": {"mimeType": mime, "data": b64(data)}, "thoughtSignature": "c2ln"},
    ]
    body: dict[str, Any] = {
        "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
        "modelVersion": "gemini-3-pro-image-preview",
        "responseId": "DOd6afWPNZfjjrEPpZ3c0AM",
    }
    if usage is not None:
        body["usageMetadata"] = usage
    return body


GEMINI_PROMPT_BLOCKED = {
    "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
    "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10},
    "modelVersion": "gemini-3-pro-image-preview",
    "responseId": "x",
}

GEMINI_IMAGE_SAFETY = {
    "candidates": [
        {
            "content": {},
            "finishReason": "IMAGE_SAFETY",
            "index": 0,
            "finishMessage": "Unable to show the generated image. The image was filtered out because it "
            "violated Google's [Generative AI Prohibited Use policy](...). "
            "You will not be charged for blocked "
            "images. Try rephrasing the prompt. ...",
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 464,
        "candidatesTokenCount": 0,
        "totalTokenCount": 755,
        "thoughtsTokenCount": 291,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 206},
            {"modality": "IMAGE", "tokenCount": 258},
        ],
    },
    "modelVersion": "gemini-3-pro-image-preview",
}

GEMINI_TEXT_ONLY = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {"text": "**Considering**", "thought": True},
                    {
                        "text": "I can't create images of real people in that setting. "
                        "I can make a generic illustration."
                    },
                ],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 20, "totalTokenCount": 32},
}


def gemini_429(
    retry_delay: str | None = "47s",
    quota_id: str = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
    quota_value: str = "10",
    message_tail: str = "",
) -> dict[str, Any]:
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": "gemini-3-pro-image"},
                    "quotaValue": quota_value,
                }
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "d", "url": "https://x"}]},
    ]
    if retry_delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    return {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "You exceeded your current quota, please check your plan and billing details. "
            "For more information on this error, head to: "
            "https://ai.google.dev/gemini-api/docs/rate-limits. " + message_tail,
            "details": details,
        }
    }


GEMINI_503 = {
    "error": {
        "code": 503,
        "message": "The model is overloaded. Please try again later.",
        "status": "UNAVAILABLE",
    }
}
GEMINI_500 = {
    "error": {
        "code": 500,
        "message": "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        "status": "INTERNAL",
    }
}
GEMINI_KEY_INVALID = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    }
}
GEMINI_BAD_FIELD = {
    "error": {
        "code": 400,
        "status": "INVALID_ARGUMENT",
        "message": 'Invalid JSON payload received. Unknown name "foo": Cannot find field.',
    }
}


def sandbox_serves(url: str, method: str, path: str) -> bool:
    """Whether the sandbox at `url` has a route for `path` (Starlette answers unknown routes with a plain-text
    404; every protocol route answers JSON, even for a bad request)."""
    with httpx.Client(timeout=10) as c:
        resp = c.request(method, url + path, json={})
    return not (resp.status_code in (404, 405) and "json" not in resp.headers.get("content-type", ""))
