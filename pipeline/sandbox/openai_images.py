"""OpenAI Images API (PROVIDERS.md §5): `POST /v1/images/generations` (JSON) and `/v1/images/edits`.

Edits take multipart/form-data with `image[]` (the SDK's array form) or `image` files, or JSON with `image`
(or `images`, `image_urls`) as a list of data: URIs or URLs, not fetched (some resellers); generations
accept the same JSON reference fields. Answers carry `b64_json`, or `url` (pointing at
/_sandbox/files/{id} on the sandbox) when the request says `response_format: "url"` or the profile does.

Size: `size` "WxH" picks the nearest of the ten Gemini ratios and the resolution whose long side is nearest;
"auto" or no size means the first input image's ratio (edits) or 1:1, at 1K. Reseller extension fields
`aspect_ratio` and `resolution` (or `image_size`) win over `size` when given.
Errors use OpenAI's envelope; 429s carry `retry-after-ms` and `retry-after` headers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.providers.base import ASPECT_RATIOS, RESOLUTIONS
from pipeline.sandbox.aimlapi import AimlImagesApi
from pipeline.sandbox.aimlapi import error_body as aiml_error_body
from pipeline.sandbox.faults import SPURIOUS_RETRY_S, Fault
from pipeline.sandbox.generation import (
    MAX_REFERENCE_IMAGES,
    Generated,
    GenRequest,
    image_ratio,
    malformed_json,
    nearest_ratio,
    nearest_resolution,
    sha256_hex,
    truncated_b64,
)
from pipeline.sandbox.http import bearer_token, counted, json_response, provider_name, root_url, token
from pipeline.sandbox.state import Endpoint, SandboxState

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
MAX_PROMPT_CHARS = 32_000
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {
            "message": message,
            "type": type_,
            "param": param,
            "code": code,
            **(extra or {}),
        }
        self.headers = headers or {}


@dataclass(frozen=True)
class ImagesCall:
    prompt: str
    n: int
    aspect_ratio: str
    resolution: str
    mime_type: str
    response_format: str
    quality: str
    references: tuple[str, ...]

    def requests(self) -> list[GenRequest]:
        return [
            GenRequest(
                self.prompt, self.aspect_ratio, self.resolution, self.mime_type, self.references, index=i
            )
            for i in range(self.n)
        ]


def _duration(seconds: float) -> str:
    """OpenAI's reset header style: '1.5s', '120ms'."""
    return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def rate_limited(model: str, per_day: bool, limit: int | None, retry_after_s: float) -> OpenAIError:
    unit = "requests per day (RPD)" if per_day else "requests per min (RPM)"
    wait = _duration(retry_after_s)
    headers = {
        "retry-after-ms": str(max(1, math.ceil(retry_after_s * 1000))),
        "retry-after": str(max(1, math.ceil(retry_after_s))),
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": wait,
    }
    if limit is not None:
        headers["x-ratelimit-limit-requests"] = str(limit)
    message = (
        f"Rate limit reached for {model} in organization org-sandbox on {unit}: Limit {limit or 'n/a'}, "
        f"Used {limit or 'n/a'}, Requested 1. Please try again in {wait}. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    return OpenAIError(429, message, type_="requests", code="rate_limit_exceeded", headers=headers)


def moderation_blocked(stage: str) -> OpenAIError:
    return OpenAIError(
        400,
        "Your request was rejected by the safety system.",
        type_="image_generation_user_error",
        code="moderation_blocked",
        extra={"moderation_details": {"moderation_stage": stage, "categories": ["sandbox"]}},
    )


def fault_error(fault: Fault, model: str, ep: Endpoint) -> OpenAIError:
    if fault is Fault.HTTP_500:
        return OpenAIError(
            500,
            "The server had an error while processing your request. Sorry about that!",
            type_="server_error",
        )
    if fault in (Fault.HTTP_503, Fault.SHED):
        return OpenAIError(
            503, "The engine is currently overloaded, please try again later", type_="server_error"
        )
    if fault is Fault.RATE_LIMIT:
        return rate_limited(model, False, ep.limiter.rpm, SPURIOUS_RETRY_S)
    if fault is Fault.DAILY_QUOTA:
        return rate_limited(model, True, ep.limiter.rpd, ep.limiter.seconds_to_day_reset())
    if fault is Fault.INSUFFICIENT_QUOTA:
        return OpenAIError(
            429,
            "You exceeded your current quota, please check your plan and billing details. For more "
            "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
            type_="insufficient_quota",
            code="insufficient_quota",
        )
    if fault is Fault.AUTH:
        return invalid_key()
    raise ValueError(f"not an error fault: {fault}")


def invalid_key() -> OpenAIError:
    return OpenAIError(
        401,
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def _int(value: Any, name: str, lo: int, hi: int, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise OpenAIError(400, f"Invalid type for '{name}': expected an integer.", param=name) from None
    if not lo <= number <= hi:
        raise OpenAIError(
            400, f"Invalid '{name}': {number}. Expected a value between {lo} and {hi}.", param=name
        )
    return number


def _decode_image_ref(ref: str) -> bytes | None:
    """Bytes of a data: URI (or bare base64); None for URLs, which the sandbox does not fetch."""
    if ref.startswith(("http://", "https://")):
        return None
    payload = ref.split(",", 1)[1] if ref.startswith("data:") else ref
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except binascii.Error:
        raise OpenAIError(
            400, "Invalid image: expected a file, a data URI or a URL.", param="image"
        ) from None


def parse_call(fields: dict[str, Any], images: list[bytes | str], default_format: str) -> ImagesCall:
    """Validate the fields shared by generations and edits. `images` holds bytes, or URLs not fetched."""
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise OpenAIError(
            400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter"
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise OpenAIError(
            400, f"Invalid 'prompt': longer than {MAX_PROMPT_CHARS} characters.", param="prompt"
        )
    if len(images) > MAX_REFERENCE_IMAGES:
        raise OpenAIError(
            400, f"Invalid 'image': at most {MAX_REFERENCE_IMAGES} images are accepted.", param="image"
        )
    n = _int(fields.get("n"), "n", 1, 10, 1)
    first = next((img for img in images if isinstance(img, bytes)), None)
    ratio = (image_ratio(first) if first is not None else None) or "1:1"
    resolution = "1K"
    size = fields.get("size")
    if size not in (None, "", "auto"):
        match = _SIZE.match(str(size))
        if match is None:
            raise OpenAIError(400, f"Invalid value: '{size}'. Expected 'auto' or WIDTHxHEIGHT.", param="size")
        width, height = int(match[1]), int(match[2])
        ratio = nearest_ratio(width, height)
        resolution = nearest_resolution(ratio, width, height)
    if fields.get("aspect_ratio"):
        ratio = str(fields["aspect_ratio"])
        if ratio not in ASPECT_RATIOS:
            raise OpenAIError(400, f"Invalid 'aspect_ratio': '{ratio}'.", param="aspect_ratio")
    res_field = "resolution" if fields.get("resolution") else "image_size"
    if fields.get(res_field):
        resolution = str(fields[res_field]).upper()
        if resolution not in RESOLUTIONS:
            raise OpenAIError(400, f"Invalid '{res_field}': '{fields[res_field]}'.", param=res_field)
    output_format = str(fields.get("output_format") or default_format).lower()
    if output_format not in FORMATS:
        raise OpenAIError(400, f"Invalid 'output_format': '{output_format}'.", param="output_format")
    response_format = str(fields.get("response_format") or "")
    if response_format not in ("", "url", "b64_json"):
        raise OpenAIError(400, f"Invalid 'response_format': '{response_format}'.", param="response_format")
    refs = tuple(
        sha256_hex(i) if isinstance(i, bytes) else hashlib.sha256(i.encode()).hexdigest() for i in images
    )
    return ImagesCall(
        prompt=prompt,
        n=n,
        aspect_ratio=ratio,
        resolution=resolution,
        mime_type=FORMATS[output_format],
        response_format=response_format,
        quality=str(fields.get("quality") or "auto"),
        references=refs,
    )


class OpenAIImagesApi:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.aiml = AimlImagesApi(state)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/images/generations", self.generations, methods=["POST"]),
            Route("/v1/images/edits", self.edits, methods=["POST"]),
        ]

    def _respond(
        self, ep: Endpoint, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> Response:
        headers = {"x-request-id": f"req_{token(24)}", **(headers or {})}
        return counted(self.state.ledger, ep, status, body, generate=True, headers=headers)

    async def generations(self, request: Request) -> Response:
        return await self._handle(request, edit=False)

    async def edits(self, request: Request) -> Response:
        return await self._handle(request, edit=True)

    async def _handle(self, request: Request, *, edit: bool) -> Response:
        ep = self.state.endpoint(provider_name(request), "openai")
        if ep is None:
            return json_response({"error": {"message": "Not found", "type": "invalid_request_error"}}, 404)
        if ep.protocol == "aimlapi":  # AIML serves both cases on /v1/images/generations, nothing on /edits
            if edit:
                return counted(self.state.ledger, ep, 404, aiml_error_body(404, "Not Found", "/v1/images/edits"),
                               generate=True)
            return await self.aiml.handle(request, ep)
        try:
            key = bearer_token(request)
            if not ep.accepts_key(key):
                raise invalid_key()
            fields, images = await self._read(request, edit=edit)
            default_format = EXTENSIONS[ep.profile.output_mime]
            call = parse_call(fields, images, default_format)
            model = str(fields.get("model") or "gemini-3-pro-image-preview")
            admission = ep.limiter.admit()
            if not admission.ok:
                per_day = admission.quota == "rpd"
                limit = ep.limiter.rpd if per_day else ep.limiter.rpm
                raise rate_limited(model, per_day, limit, admission.retry_after_s)
            gen_requests = call.requests()
            decision = self.state.decide(ep, call.prompt, gen_requests[0].fingerprint)
            if decision.fault is not None and decision.fault.is_error:
                raise fault_error(decision.fault, model, ep)
            made = [await self.state.generate(ep, gen_requests[0], decision)]
            for extra in gen_requests[1:]:
                made.append(await self.state.generate(ep, extra, decision, latency=False))
            self.state.charge(ep, made)
            if decision.fault is Fault.BLOCK_PROMPT:
                raise moderation_blocked("input")
            if decision.fault is Fault.BLOCK_IMAGE:
                raise moderation_blocked("output")
        except OpenAIError as e:
            return self._respond(ep, e.status, {"error": e.body}, e.headers)
        use_url = call.response_format == "url" or (
            not call.response_format and ep.profile.response_format == "url"
        )
        body = self._body(request, call, made, use_url=use_url)
        text = json.dumps(body, separators=(",", ":"))
        if decision.fault is Fault.MALFORMED:
            text = malformed_json(text)
        return counted(self.state.ledger, ep, 200, generate=True, content=text,
                       headers={"x-request-id": f"req_{token(24)}"})

    async def _read(self, request: Request, *, edit: bool) -> tuple[dict[str, Any], list[bytes | str]]:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data") or content_type.startswith(
            "application/x-www-form-urlencoded"
        ):
            form = await request.form(max_files=64)
            fields: dict[str, Any] = {}
            images: list[bytes | str] = []
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if name in ("image", "image[]"):
                        images.append(await value.read())
                elif name in ("image", "image[]"):
                    images.append(str(value))
                else:
                    fields[name] = value
            return fields, [(_decode_image_ref(i) or i) if isinstance(i, str) else i for i in images]
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise OpenAIError(400, "We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise OpenAIError(400, "We could not parse the JSON body of your request.")
        raw = body.get("image") or body.get("images") or body.get("image_urls") or []
        refs = raw if isinstance(raw, list) else [raw]
        if edit and not refs:
            raise OpenAIError(
                400, "Missing required parameter: 'image'.", param="image", code="missing_required_parameter"
            )
        return body, [(_decode_image_ref(str(r)) or str(r)) for r in refs]

    def _body(
        self, request: Request, call: ImagesCall, made: list[Generated], *, use_url: bool
    ) -> dict[str, Any]:
        data: list[dict[str, Any]] = []
        for gen in made:
            if gen.image is None:
                continue
            if use_url:
                payload = gen.image[: len(gen.image) // 2] if gen.fault is Fault.TRUNCATED else gen.image
                blob = self.state.files.put(payload, call.mime_type)
                ext = EXTENSIONS.get(call.mime_type, "png")
                url: str | None = f"{root_url(request)}/_sandbox/files/{blob.id}.{ext}"
                data.append({"b64_json": None, "url": url, "revised_prompt": None})
            elif gen.fault is Fault.TRUNCATED:
                data.append({"b64_json": truncated_b64(gen.image), "url": None, "revised_prompt": None})
            else:
                data.append({"b64_json": base64.b64encode(gen.image).decode(), "url": None, "revised_prompt": None})
        first = made[0]
        width, height = first.request.size
        image_tokens = sum(g.usage.image_tokens for g in made if g.image is not None)
        text_out = sum(
            g.usage.other_candidate_tokens + g.usage.thoughts_tokens for g in made if g.image is not None
        )
        usage = first.usage
        return {
            "created": int(time.time()),
            "background": "opaque",
            "output_format": EXTENSIONS.get(call.mime_type, "png"),
            "quality": call.quality,
            "size": f"{width}x{height}",
            "data": data,
            "usage": {
                "input_tokens": usage.prompt_tokens,
                "input_tokens_details": {
                    "text_tokens": usage.text_tokens,
                    "image_tokens": usage.image_input_tokens,
                },
                "output_tokens": image_tokens + text_out,
                "output_tokens_details": {"image_tokens": image_tokens, "text_tokens": text_out},
                "total_tokens": usage.prompt_tokens + image_tokens + text_out,
            },
        }
