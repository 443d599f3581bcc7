"""AIML API's image dialect (docs.aimlapi.com; aimlapi/api-docs image-models/Google/gemini-3-pro-image-preview.json
and -edit.json @4cd011cd, errors-and-messages/*.md), served on `POST /v1/images/generations` for provider
names whose profile says `protocol: aimlapi`.

Request: JSON `{model, prompt, aspect_ratio?, resolution?, num_images?, provider?}`; the edit models
(`google/nano-banana-pro-edit`, `google/gemini-3-pro-image-preview-edit`) require `image_urls` (URLs, fetched as
AIML would, or base64 data URLs; at most 14; one that is not an image, or a URL that does not answer with one, is
a 400 naming the entry: AIML documents no answer for that case). Fields outside the schema are refused with AIML's
400 "Body validation error". Answer: `{"data": [{"url", "content_type", "file_name", ...}], "meta": {"usage":
{"credits_used"}}}` (url as in the docs' example). Errors carry the class in the HTTP status with body
`{message, path, requestId, statusCode, timestamp}`: 401 bad key, 403 "run out of credits", 429 "Too Many
Requests", 500/503 as documented. AIML documents no shape for a safety block: the sandbox answers a block or
a refusal with `"data": []` (no image, nothing billed).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from pipeline.providers.base import ASPECT_RATIOS, RESOLUTIONS
from pipeline.sandbox.faults import Fault
from pipeline.sandbox.generation import (
    MAX_REFERENCE_IMAGES,
    Generated,
    GenRequest,
    image_ratio,
    malformed_json,
    sha256_hex,
)
from pipeline.sandbox.http import bearer_token, counted, fetch_urls, rfc3339, root_url
from pipeline.sandbox.state import Endpoint, SandboxState

TEXT_MODELS = ("google/nano-banana-pro", "google/gemini-3-pro-image-preview")
EDIT_MODELS = ("google/nano-banana-pro-edit", "google/gemini-3-pro-image-preview-edit")
FIELDS = frozenset({"model", "prompt", "aspect_ratio", "resolution", "num_images", "provider", "image_urls"})
#: credits AIML reports per image (its docs' example: 120000 in the schema)
CREDITS_PER_IMAGE = 120_000
CREDITS_MESSAGE = (
    "You've run out of credits. Please top up your balance or update your payment method to continue: "
    "https://aimlapi.com/app/billing/"
)
KEY_MESSAGE = (
    "This request requires a valid API key. You can create a new API key on the Billing page: "
    "https://aimlapi.com/app/keys"
)


class AimlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str, path: str) -> dict[str, Any]:
    return {
        "message": message,
        "path": path,
        "requestId": str(uuid.uuid4()),
        "statusCode": status,
        "timestamp": rfc3339()[:-4] + "Z",
    }


def fault_error(fault: Fault) -> AimlError:
    if fault is Fault.HTTP_500:
        return AimlError(500, "Internal server error")
    if fault in (Fault.HTTP_503, Fault.SHED):
        return AimlError(503, "Service unavailable")
    if fault in (Fault.RATE_LIMIT, Fault.DAILY_QUOTA):
        return AimlError(429, "Too Many Requests")
    if fault is Fault.INSUFFICIENT_QUOTA:
        return AimlError(403, CREDITS_MESSAGE)
    if fault is Fault.AUTH:
        return AimlError(401, KEY_MESSAGE)
    raise ValueError(f"not an error fault: {fault}")


def _invalid(detail: str) -> AimlError:
    return AimlError(400, f"Body validation error\n{detail}")


def _reference(ref: Any) -> str | bytes:
    """One image_urls entry: an http(s) URL (fetched later, as AIML does), or the bytes of a data URL / bare base64."""
    if not isinstance(ref, str) or not ref:
        raise _invalid("image_urls: Expected string")
    if ref.startswith(("http://", "https://")):
        return ref
    payload = ref.split(",", 1)[1] if ref.startswith("data:") else ref
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("image_urls: Invalid url or base64 image") from None


@dataclass(frozen=True)
class Parsed:
    """An AIML request as its schema reads it; references still to be fetched are URLs."""

    prompt: str
    references: tuple[str | bytes, ...]
    aspect_ratio: str | None
    resolution: str
    count: int

    def generations(self, images: list[bytes]) -> list[GenRequest]:
        """The generations asked for, once every reference is bytes (`images`, in order)."""
        ratio = self.aspect_ratio or next((r for r in map(image_ratio, images) if r), None) or "1:1"
        identities = tuple(sha256_hex(raw) for raw in images)
        return [GenRequest(self.prompt, ratio, self.resolution, "image/png", identities, index=i)
                for i in range(self.count)]


def parse_request(body: Any) -> Parsed:
    """What one AIML request asks for. Raises AimlError (400) for what the schema refuses."""
    if not isinstance(body, dict):
        raise _invalid("Expected object, received " + type(body).__name__)
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise _invalid(f"Unrecognized key(s) in object: {', '.join(repr(k) for k in unknown)}")
    model = body.get("model")
    if model not in TEXT_MODELS + EDIT_MODELS:
        allowed = " | ".join(repr(m) for m in TEXT_MODELS + EDIT_MODELS)
        raise _invalid(f"Invalid enum value. Expected {allowed}, received {model!r}")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _invalid("prompt: Required")
    refs_in = body.get("image_urls")
    if model in EDIT_MODELS:
        if not isinstance(refs_in, list) or not refs_in:
            raise _invalid("image_urls: Required")
        if len(refs_in) > MAX_REFERENCE_IMAGES:
            raise _invalid(f"image_urls: Array must contain at most {MAX_REFERENCE_IMAGES} element(s)")
    elif refs_in is not None:
        raise _invalid("Unrecognized key(s) in object: 'image_urls'")
    refs = tuple(_reference(r) for r in refs_in or [])
    ratio = body.get("aspect_ratio")
    if ratio is not None and ratio not in ASPECT_RATIOS:
        raise _invalid(f"aspect_ratio: Invalid enum value. Expected {' | '.join(ASPECT_RATIOS)}, received {ratio!r}")
    resolution = body.get("resolution") or "1K"
    if resolution not in RESOLUTIONS:
        raise _invalid(f"resolution: Invalid enum value. Expected '1K' | '2K' | '4K', received {resolution!r}")
    n = body.get("num_images", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 4:
        raise _invalid("num_images: Number must be between 1 and 4")
    return Parsed(prompt, refs, ratio, resolution, n)


async def fetch_references(parsed: Parsed) -> list[bytes]:
    """Every reference as image bytes, URLs downloaded as AIML would. Raises AimlError (400) for one that cannot
    be (AIML documents no answer for it: the sandbox names the entry in a body validation error)."""
    urls = [r for r in parsed.references if isinstance(r, str)]
    fetched = iter(await fetch_urls(urls)) if urls else iter(())
    images: list[bytes] = []
    for i, ref in enumerate(parsed.references):
        raw = next(fetched) if isinstance(ref, str) else ref
        if raw is None or image_ratio(raw) is None:
            raise _invalid(f"image_urls[{i}]: could not be downloaded as an image")
        images.append(raw)
    return images


class AimlImagesApi:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def _answer(self, ep: Endpoint, status: int, body: Any, *, text: str | None = None) -> Response:
        return counted(self.state.ledger, ep, status, body, generate=True, content=text)

    async def handle(self, request: Request, ep: Endpoint) -> Response:
        path = "/v1/images/generations"
        try:
            if not ep.accepts_key(bearer_token(request)):
                raise AimlError(401, KEY_MESSAGE)
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                raise _invalid("Invalid JSON body") from None
            parsed = parse_request(body)
            gens = parsed.generations(await fetch_references(parsed))
            admission = ep.limiter.admit()
            if not admission.ok:
                raise AimlError(429, "Too Many Requests")
            decision = self.state.decide(ep, gens[0].prompt, gens[0].fingerprint)
            if decision.fault is not None and decision.fault.is_error:
                raise fault_error(decision.fault)
            made = [await self.state.generate(ep, gens[0], decision)]
            for extra in gens[1:]:
                made.append(await self.state.generate(ep, extra, decision, latency=False))
            self.state.charge(ep, made)
        except AimlError as e:
            return self._answer(ep, e.status, error_body(e.status, e.message, path))
        out = self._body(request, made)
        text = json.dumps(out, separators=(",", ":"))
        if decision.fault is Fault.MALFORMED:
            text = malformed_json(text)
        return self._answer(ep, 200, None, text=text)

    def _body(self, request: Request, made: list[Generated]) -> dict[str, Any]:
        data: list[dict[str, Any]] = []
        for gen in made:
            if gen.image is None:
                continue
            payload = gen.image[: len(gen.image) // 2] if gen.fault is Fault.TRUNCATED else gen.image
            blob = self.state.files.put(payload, "image/png")
            name = f"{blob.id}.png"
            data.append({
                "url": f"{root_url(request)}/_sandbox/files/{name}",
                "content_type": "image/png",
                "width": None,
                "height": None,
                "file_name": name,
            })
        credits = CREDITS_PER_IMAGE * len(data)  # the schema names it credits_used, the docs' example tokens_used
        return {"description": "", "data": data, "meta": {"usage": {"credits_used": credits, "tokens_used": credits}}}
