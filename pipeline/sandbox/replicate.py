"""Replicate predictions for google/nano-banana-pro (PROVIDERS.md §6).

`POST /v1/models/{owner}/{name}/predictions` (or `POST /v1/predictions` with a version) answers 201 with a
prediction; with `Prefer: wait` or `Prefer: wait=n` it waits up to n seconds (default 60) for it to finish.
Files: `POST /v1/files` and friends (replicate_files.py); an input URL of an uploaded file counts as its bytes.
`GET /v1/predictions/{id}` polls, `POST /v1/predictions/{id}/cancel` cancels; `Cancel-After: 90s` cancels
automatically. Status goes starting -> processing -> succeeded | failed | canceled; `output` is one URL on
the sandbox (/_sandbox/files/{id}.{ext}). `image_input` takes URLs (not fetched, hashed as given) or
data: URIs. Errors are RFC 7807 problems; a 429 has `retry_after` in the body and a Retry-After header.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.clock import utcnow
from pipeline.providers.base import ASPECT_RATIOS, RESOLUTIONS
from pipeline.sandbox.faults import SPURIOUS_RETRY_S, Fault
from pipeline.sandbox.files import new_id
from pipeline.sandbox.generation import MAX_REFERENCE_IMAGES, GenRequest, image_ratio, sha256_hex
from pipeline.sandbox.http import base_url, bearer_token, counted, json_response, provider_name, rfc3339, root_url
from pipeline.sandbox.replicate_files import ReplicateFiles
from pipeline.sandbox.state import Decision, Endpoint, SandboxState

MODEL = "google/nano-banana-pro"
#: a made-up version id for the sandbox's model
VERSION = "sandbox0000000000000000000000000000000000000000000000000000000000"
FORMATS = {"jpg": "image/jpeg", "png": "image/png"}
SAFETY_LEVELS = ("block_low_and_above", "block_medium_and_above", "block_only_high")
TERMINAL = ("succeeded", "failed", "canceled")
#: longest Prefer: wait
MAX_WAIT_S = 60
#: predictions kept for GET; beyond this the oldest finished ones are forgotten (Replicate keeps an hour)
MAX_PREDICTIONS = 10_000
#: time from "starting" to "processing"
START_DELAY_S = 0.05
E005 = "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
NO_IMAGE = "Prediction failed: the model returned no image. Please try again with a different prompt."
PROBLEM_JSON = "application/problem+json"
_PREFER_WAIT = re.compile(r"\bwait(?:=(\d+))?\b")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.body = {"title": title, "detail": detail, "status": status, **extra}
        self.headers: dict[str, str] = {}


def throttled(retry_after_s: float) -> Problem:
    wait = max(1, math.ceil(retry_after_s))
    detail = f"Request was throttled. Your rate limit resets in ~{wait}s."
    problem = Problem(429, "Request was throttled.", detail, retry_after=wait)
    problem.headers["Retry-After"] = str(wait)
    return problem


def fault_problem(fault: Fault, ep: Endpoint) -> Problem:
    if fault is Fault.HTTP_500:
        return Problem(500, "Internal Server Error", "An internal error occurred. Please try again.")
    if fault in (Fault.HTTP_503, Fault.SHED):
        return Problem(
            503, "Service Unavailable", "The service is temporarily unavailable. Please try again."
        )
    if fault is Fault.RATE_LIMIT:
        return throttled(SPURIOUS_RETRY_S)
    if fault is Fault.DAILY_QUOTA:
        return throttled(ep.limiter.seconds_to_day_reset())
    if fault is Fault.INSUFFICIENT_QUOTA:
        return Problem(
            402,
            "Insufficient credit",
            "You have insufficient credit to run this model. Go to "
            "https://replicate.com/account/billing#billing to purchase credit. Once you purchase credit, "
            "please wait a few minutes before retrying.",
        )
    if fault is Fault.AUTH:
        return unauthenticated()
    raise ValueError(f"not an error fault: {fault}")


def unauthenticated() -> Problem:
    return Problem(401, "Unauthenticated", "You did not pass a valid authentication token")


def invalid(field_name: str, description: str) -> Problem:
    return Problem(
        422,
        "Input validation failed",
        f"- input.{field_name}: {description}\n",
        invalid_fields=[{"type": "invalid", "field": f"input.{field_name}", "description": description}],
    )


def _seconds(text: str) -> float | None:
    match = _DURATION.match(text.strip())
    if match is None:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match[2] or "s"]
    return float(match[1]) * scale


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    endpoint: Endpoint
    gen: GenRequest
    decision: Decision
    api_base: str
    files_base: str
    status: str = "starting"
    created: datetime = field(default_factory=utcnow)
    started: datetime | None = None
    completed: datetime | None = None
    output: str | None = None
    error: str | None = None
    logs: str = ""
    predict_time_s: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def finish(self, status: str) -> None:
        self.status = status
        self.completed = utcnow()
        self.done.set()

    def to_json(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if self.predict_time_s is not None:
            metrics["predict_time"] = round(self.predict_time_s, 6)
        if self.completed is not None:
            metrics["total_time"] = round((self.completed - self.created).total_seconds(), 6)
        urls = {
            "get": f"{self.api_base}/v1/predictions/{self.id}",
            "cancel": f"{self.api_base}/v1/predictions/{self.id}/cancel",
            "stream": f"{self.api_base}/v1/predictions/{self.id}/stream",
            "web": f"https://replicate.com/p/{self.id}",
        }
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": self.logs,
            "output": self.output,
            "data_removed": False,
            "error": self.error,
            "status": self.status,
            "source": "api",
            "created_at": rfc3339(self.created),
            "started_at": rfc3339(self.started) if self.started else None,
            "completed_at": rfc3339(self.completed) if self.completed else None,
            "metrics": metrics,
            "urls": urls,
        }


def parse_input(
    data: Any, resolve: Callable[[str], bytes | None] = lambda url: None
) -> tuple[dict[str, Any], GenRequest]:
    """Validate `input` against the nano-banana-pro schema; the GenRequest it asks for. `resolve` gives the
    bytes behind a URL the sandbox serves itself (an uploaded file), so it counts as that image."""
    if not isinstance(data, dict):
        raise Problem(422, "Input validation failed", "- input: Invalid type. Expected: object\n")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("prompt", "prompt is required")
    refs_in = data.get("image_input") or []
    if not isinstance(refs_in, list) or not all(isinstance(r, str) for r in refs_in):
        raise invalid("image_input", "Invalid type. Expected: array of strings")
    if len(refs_in) > MAX_REFERENCE_IMAGES:
        raise invalid("image_input", f"Array must have at most {MAX_REFERENCE_IMAGES} items")
    refs: list[str] = []
    first_ratio: str | None = None
    for ref in refs_in:
        if ref.startswith("data:"):
            try:
                raw = base64.b64decode(ref.split(",", 1)[-1], validate=True)
            except binascii.Error:
                raise invalid("image_input", "Does not match format 'uri'") from None
            refs.append(sha256_hex(raw))
            first_ratio = first_ratio or image_ratio(raw)
        elif ref.startswith(("http://", "https://")):
            own = resolve(ref)
            refs.append(sha256_hex(own) if own is not None else hashlib.sha256(ref.encode()).hexdigest())
            if own is not None:
                first_ratio = first_ratio or image_ratio(own)
        else:
            raise invalid("image_input", "Does not match format 'uri'")
    ratio = str(data.get("aspect_ratio") or "match_input_image")
    if ratio == "match_input_image":
        ratio = first_ratio or "1:1"
    elif ratio not in ASPECT_RATIOS:
        allowed = ", ".join(("match_input_image", *ASPECT_RATIOS))
        raise invalid("aspect_ratio", f"aspect_ratio must be one of the following: {allowed}")
    resolution = str(data.get("resolution") or "2K")
    if resolution not in RESOLUTIONS:
        raise invalid("resolution", "resolution must be one of the following: 1K, 2K, 4K")
    output_format = str(data.get("output_format") or "jpg")
    if output_format not in FORMATS:
        raise invalid("output_format", "output_format must be one of the following: jpg, png")
    safety = data.get("safety_filter_level")
    if safety is not None and safety not in SAFETY_LEVELS:
        raise invalid("safety_filter_level", f"must be one of the following: {', '.join(SAFETY_LEVELS)}")
    gen = GenRequest(prompt, ratio, resolution, FORMATS[output_format], tuple(refs))
    return dict(data), gen


class ReplicateApi:
    def __init__(self, state: SandboxState, files: ReplicateFiles | None = None) -> None:
        self.state = state
        self.files = files or ReplicateFiles(state)
        self.predictions: dict[str, Prediction] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models/{owner}/{name}/predictions", self.create_for_model, methods=["POST"]),
            Route("/v1/predictions", self.create_for_version, methods=["POST"]),
            Route("/v1/predictions/{prediction_id}", self.get, methods=["GET"]),
            Route("/v1/predictions/{prediction_id}/cancel", self.cancel, methods=["POST"]),
        ]

    def _answer(self, ep: Endpoint, status: int, body: Any, *, generate: bool = False) -> Response:
        return counted(self.state.ledger, ep, status, body, generate=generate)

    def _problem(self, ep: Endpoint, problem: Problem, *, generate: bool = False) -> Response:
        return counted(self.state.ledger, ep, problem.status, problem.body, generate=generate,
                       headers=problem.headers, media_type=PROBLEM_JSON)

    def _endpoint(self, request: Request) -> Endpoint | None:
        return self.state.endpoint(provider_name(request), "replicate")

    def _check_key(self, ep: Endpoint, request: Request) -> None:
        if not ep.accepts_key(bearer_token(request)):
            raise unauthenticated()

    async def create_for_model(self, request: Request) -> Response:
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        return await self._create(request, model)

    async def create_for_version(self, request: Request) -> Response:
        return await self._create(request, None)

    async def _create(self, request: Request, model: str | None) -> Response:
        ep = self._endpoint(request)
        if ep is None:
            return json_response({"detail": "Not found.", "status": 404, "title": "Not found"}, 404)
        try:
            self._check_key(ep, request)
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                raise Problem(400, "Bad request", "Invalid JSON in request body.") from None
            if not isinstance(body, dict):
                raise Problem(400, "Bad request", "Request body must be an object.")
            version = VERSION
            if model is None:
                if not body.get("version"):
                    raise Problem(422, "Input validation failed", "- version: version is required\n")
                version = str(body["version"]).rsplit(":", 1)[-1]
                model = MODEL
            input_echo, gen = parse_input(body.get("input"), self._uploaded)
            admission = ep.limiter.admit()
            if not admission.ok:
                raise throttled(admission.retry_after_s)
            decision = self.state.decide(ep, gen.prompt, gen.fingerprint)
            if decision.fault is not None and decision.fault.is_error:
                raise fault_problem(decision.fault, ep)
        except Problem as problem:
            return self._problem(ep, problem, generate=True)
        pred = Prediction(
            id=new_id(26),
            model=model,
            version=version,
            input=input_echo,
            endpoint=ep,
            gen=gen,
            decision=decision,
            api_base=base_url(request),
            files_base=root_url(request),
        )
        self._forget_old()
        self.predictions[pred.id] = pred
        loop = asyncio.get_running_loop()
        pred.task = loop.create_task(self._run(pred))
        cancel_after = _seconds(request.headers.get("cancel-after", ""))
        if cancel_after is not None:
            loop.call_later(cancel_after, self._cancel, pred)
        wait = _PREFER_WAIT.search(request.headers.get("prefer", ""))
        if wait is not None:
            timeout = min(MAX_WAIT_S, max(1, int(wait[1]))) if wait[1] else MAX_WAIT_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pred.done.wait(), timeout)
        return self._answer(ep, 201, pred.to_json(), generate=True)

    def _uploaded(self, url: str) -> bytes | None:
        blob = self.files.blob(url)
        return blob.data if blob is not None else None

    def _forget_old(self) -> None:
        excess = len(self.predictions) - MAX_PREDICTIONS + 1
        if excess > 0:
            finished = [pid for pid, p in self.predictions.items() if p.status in TERMINAL][:excess]
            for pid in finished:
                del self.predictions[pid]

    async def _run(self, pred: Prediction) -> None:
        await asyncio.sleep(START_DELAY_S)
        pred.status = "processing"
        pred.started = utcnow()
        begun = time.monotonic()
        pred.logs = "Generating image...\n"
        gen = await self.state.generate(pred.endpoint, pred.gen, pred.decision)
        pred.predict_time_s = time.monotonic() - begun
        if gen.image is None:
            pred.error = NO_IMAGE if gen.fault is Fault.REFUSE else E005
            pred.finish("failed")
            return
        data = gen.image
        if gen.fault is Fault.TRUNCATED:
            data = data[: len(data) // 2]
        elif gen.fault is Fault.MALFORMED:
            data = b"<html><body>upstream error</body></html>"
        blob = self.state.files.put(data, pred.gen.mime_type)
        ext = "png" if pred.gen.mime_type == "image/png" else "jpg"
        pred.output = f"{pred.files_base}/_sandbox/files/{blob.id}.{ext}"
        pred.logs += "Done.\n"
        self.state.charge(pred.endpoint, [gen])
        pred.finish("succeeded")

    def _cancel(self, pred: Prediction) -> None:
        if pred.status in TERMINAL:
            return
        if pred.task is not None:
            pred.task.cancel()
        pred.finish("canceled")

    def _prediction(self, request: Request) -> tuple[Endpoint, Prediction] | Response:
        """The prediction a request names, with its simulated provider, or the answer refusing it (404 for a
        provider name of another protocol or an unknown id, 401 for a key the profile does not accept)."""
        ep = self._endpoint(request)
        if ep is None:
            return json_response({"detail": "Not found.", "status": 404, "title": "Not found"}, 404)
        pred = self.predictions.get(str(request.path_params["prediction_id"]))
        try:
            self._check_key(ep, request)
            if pred is None:
                raise Problem(404, "Not found", "Not found.")
        except Problem as problem:
            return self._problem(ep, problem)
        return ep, pred

    async def get(self, request: Request) -> Response:
        found = self._prediction(request)
        if isinstance(found, Response):
            return found
        ep, pred = found
        return self._answer(ep, 200, pred.to_json())

    async def cancel(self, request: Request) -> Response:
        found = self._prediction(request)
        if isinstance(found, Response):
            return found
        ep, pred = found
        self._cancel(pred)
        return self._answer(ep, 200, pred.to_json())
