"""Gemini API routes: `models/{model}:generateContent` (and `:streamGenerateContent`), model info.

Served under /v1beta/ and /v1/ (google-genai with a custom base_url calls /v1/), and under /p/{name}/.
Auth: `x-goog-api-key`, `Authorization: Bearer` or `?key=`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.presets import MODEL
from pipeline.sandbox.faults import Fault
from pipeline.sandbox.gemini_wire import (
    BadRequest,
    error_body,
    fault_error,
    key_invalid_body,
    no_key_body,
    parse_generate,
    quota_body,
    response_body,
)
from pipeline.sandbox.generation import BATCH_RATES, STANDARD_RATES, blocked_cost, malformed_json
from pipeline.sandbox.http import bearer_token, json_response, provider_name, read_json, root_url, token
from pipeline.sandbox.state import Endpoint, SandboxState

#: API versions served (the SDK's default is v1, REST docs use v1beta)
VERSIONS = ("v1", "v1beta", "v1alpha")
JSON_UTF8 = "application/json; charset=UTF-8"

ModelAction = Callable[[Request, str], Awaitable[Response]]


def api_key(request: Request) -> str | None:
    return request.headers.get("x-goog-api-key") or bearer_token(request) or request.query_params.get("key")


def not_found(message: str = "Requested entity was not found.") -> Response:
    return json_response(error_body(404, "NOT_FOUND", message), 404, media_type=JSON_UTF8)


def strip_model(model: str) -> str:
    return model.removeprefix("models/")


class GeminiBase:
    """Answers in Google's JSON, counted in the ledger; Gemini key checks."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def answer(
        self,
        ep: Endpoint,
        status: int,
        body: Any,
        *,
        generate: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Response:
        self.state.ledger.request(ep.name, ep.protocol, status, generate=generate)
        return json_response(body, status, headers=headers, media_type=JSON_UTF8)

    def auth_error(self, ep: Endpoint, request: Request, *, generate: bool = False) -> Response | None:
        """The Gemini auth error for a key the profile does not accept, else None."""
        key = api_key(request)
        if ep.accepts_key(key):
            return None
        if key is None:
            return self.answer(ep, 403, no_key_body(), generate=generate)
        return self.answer(ep, 400, key_invalid_body(), generate=generate)

    def quota_error(self, ep: Endpoint, model: str, *, generate: bool = True) -> Response | None:
        """429 RESOURCE_EXHAUSTED when the rpm/rpd limits refuse this request, else None."""
        admission = ep.limiter.admit()
        if admission.ok:
            return None
        per_day = admission.quota == "rpd"
        body = quota_body(
            model,
            per_day=per_day,
            limit=ep.limiter.rpd if per_day else ep.limiter.rpm,
            retry_after_s=admission.retry_after_s,
        )
        return self.answer(ep, 429, body, generate=generate)


class GeminiApi(GeminiBase):
    def __init__(self, state: SandboxState) -> None:
        super().__init__(state)
        #: extra `models/{model}:{action}` handlers (the batch API registers batchGenerateContent)
        self.actions: dict[str, ModelAction] = {
            "generateContent": self.generate_content,
            "streamGenerateContent": self.stream_generate_content,
        }

    def routes(self) -> list[Route]:
        return [
            Route("/{version}/models/{model_action}", self.model_action, methods=["POST"]),
            Route("/{version}/models/{model}", self.get_model, methods=["GET"]),
            Route("/{version}/models", self.list_models, methods=["GET"]),
        ]

    async def model_action(self, request: Request) -> Response:
        if request.path_params["version"] not in VERSIONS:
            return not_found()
        model, _, action = str(request.path_params["model_action"]).partition(":")
        handler = self.actions.get(action)
        if handler is None:
            return not_found(f"Method {action!r} is not supported.")
        return await handler(request, strip_model(model))

    async def stream_generate_content(self, request: Request, model: str) -> Response:
        """SSE with the whole answer as one event (errors stay plain JSON, as Google sends them)."""
        response = await self.generate_content(request, model)
        if response.status_code != 200:
            return response
        return Response(b"data: " + bytes(response.body) + b"\r\n\r\n", media_type="text/event-stream")

    async def generate_content(self, request: Request, model: str) -> Response:
        ep = self.state.endpoint(provider_name(request), "gemini")
        if ep is None:
            return not_found()
        denied = self.auth_error(ep, request, generate=True)
        if denied is not None:
            return denied
        try:
            parsed = parse_generate(await read_json(request), ep.profile.output_mime)
        except ValueError as e:  # BadRequest, or a body that is not JSON
            message = (
                str(e) if isinstance(e, BadRequest) else "Invalid JSON payload received. Unexpected token."
            )
            return self.answer(ep, 400, error_body(400, "INVALID_ARGUMENT", message), generate=True)
        flex = parsed.service_tier == "flex"
        if flex and not ep.profile.flex:
            message = f"Service tier 'flex' is not supported for model models/{model}."
            return self.answer(ep, 400, error_body(400, "INVALID_ARGUMENT", message), generate=True)
        refused = self.quota_error(ep, model)
        if refused is not None:
            return refused
        gen_request = parsed.gen
        decision = self.state.decide(ep, gen_request.prompt, gen_request.fingerprint)
        if decision.fault is not None and decision.fault.is_error:
            status, body = fault_error(
                decision.fault, model, ep.limiter.rpm, ep.limiter.rpd, ep.limiter.seconds_to_day_reset()
            )
            return self.answer(ep, status, body, generate=True)
        gen = await self.state.generate(ep, gen_request, decision, batch=flex)  # flex: half rates, as batch
        self.state.charge(ep, [gen])
        body = response_body(gen, parsed, model, token(), thought_parts=ep.profile.thought_parts)
        if gen.image is None and ep.profile.price_per_image is None:
            # a blocked call or a refusal is billed for the tokens it reports, not for an image (Google's
            # billing FAQ exempts only 400/500 failures): the same rule as the adapter's
            rates = BATCH_RATES if flex else STANDARD_RATES
            self.state.ledger.bill(ep.name, ep.protocol, 0, blocked_cost(body["usageMetadata"], rates))
        if ep.profile.image_in != "inline":
            self._image_in_text(body, ep.profile.image_in, root_url(request))
        self.state.ledger.request(ep.name, ep.protocol, 200, generate=True)
        text = json.dumps(body, separators=(",", ":"))
        if gen.fault is Fault.MALFORMED:
            text = malformed_json(text)
        return Response(text, media_type=JSON_UTF8)

    def _image_in_text(self, body: dict[str, Any], mode: str, root: str) -> None:
        """Move the final image into a text part, as Gemini-format resellers answer: a data URL, or a markdown
        link to the image served under /_sandbox/files/."""
        for cand in body.get("candidates", []):
            parts = cand.get("content", {}).get("parts", [])
            for i, part in enumerate(parts):
                inline = part.get("inlineData")
                if inline is None or part.get("thought"):
                    continue
                if mode == "text-data-url":
                    parts[i] = {"text": f"data:{inline['mimeType']};base64,{inline['data']}"}
                else:
                    blob = self.state.files.put(base64.b64decode(inline["data"]), inline["mimeType"])
                    ext = "png" if inline["mimeType"] == "image/png" else "jpg"
                    parts[i] = {"text": f"![image]({root}/_sandbox/files/{blob.id}.{ext})"}

    def _model_info(self, model: str) -> dict[str, Any]:
        return {
            "name": f"models/{model}",
            "version": "3.0",
            "displayName": "Nano Banana Pro (sandbox)",
            "inputTokenLimit": 65536,
            "outputTokenLimit": 32768,
            "supportedGenerationMethods": ["generateContent", "countTokens", "batchGenerateContent"],
        }

    async def get_model(self, request: Request) -> Response:
        ep = self.state.endpoint(provider_name(request), "gemini")
        if ep is None or request.path_params["version"] not in VERSIONS:
            return not_found()
        return self.auth_error(ep, request) or self.answer(
            ep, 200, self._model_info(request.path_params["model"])
        )

    async def list_models(self, request: Request) -> Response:
        ep = self.state.endpoint(provider_name(request), "gemini")
        if ep is None or request.path_params["version"] not in VERSIONS:
            return not_found()
        return self.auth_error(ep, request) or self.answer(ep, 200, {"models": [self._model_info(MODEL)]})
