"""Kie.ai's Market task API and file upload API, answering with the shapes of tests/providers/captures/kie.

    POST /api/v1/jobs/createTask        -> {"code": 200, "msg": "success", "data": {"taskId": ...}}
    GET  /api/v1/jobs/recordInfo        -> {"code": 200, "msg": "success", "data": {taskId, model, state, param,
                                           resultJson (a JSON string), failCode, failMsg, costTime, ...}}
    POST /api/file-base64-upload        -> {"success": true, "code": 200, "msg": ..., "data": {downloadUrl, ...}}
    POST /api/file-stream-upload        (multipart: file, uploadPath, fileName)

A task goes waiting -> queuing -> generating -> success | fail; its references (image_input URLs) are fetched
over HTTP as Kie would, so a URL that does not work fails the task. The result is a URL under
/_sandbox/files/. With a callBackUrl the recordInfo answer is POSTed there when the task ends (once; Kie's retry
policy is not documented). Errors are envelopes {code, msg} with the HTTP status equal to the code, or HTTP 200
when the profile says `error_status: "200"` (both happen: see the captures). The limiter answers 429 with
{"code": 429, "msg": "Rate limit exceeded"}, for new tasks (the profile's rpm) and for recordInfo queries over the
profile's query_rps (10 a second, as Kie documents); prompt triggers: 500 -> 500, 503 -> 455 (maintenance), 429 -> 429,
429-daily -> 433 (a key's daily cap, as a public client saw it), no-credit -> 402, auth -> 401, block-prompt ->
fail 422 (the documented failed-task example), block-image -> fail 422, refuse -> fail 501 (generation failed).
Unknown models get 422 "Page does not exist or is not published" (what a public client saw for them).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.providers.kie_wire import ASPECT_RATIOS, MAX_IMAGE_INPUTS, MODEL, OUTPUT_FORMATS, RESOLUTIONS
from pipeline.sandbox.faults import Fault
from pipeline.sandbox.files import new_id
from pipeline.sandbox.generation import GenRequest, image_ratio, sha256_hex
from pipeline.sandbox.http import (
    FETCH_TIMEOUT_S,
    bearer_token,
    counted,
    fetch_urls,
    json_response,
    provider_name,
    root_url,
)
from pipeline.sandbox.state import Decision, Endpoint, SandboxState

FORMATS = {"png": "image/png", "jpg": "image/jpeg"}
EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
#: time from "waiting" to "queuing" and on to "generating"
STEP_S = 0.05
MAX_PROMPT_CHARS = 10_000
MAX_TASKS = 10_000
MESSAGES = {
    401: "You do not have access permissions",
    402: "Insufficient Credits - Account does not have enough credits to perform the operation",
    429: "Rate limit exceeded",
    433: "The current number of points used by apiKey has exceeded the daily limit",
    455: "Service Unavailable - System is currently undergoing maintenance",
    500: "Server Error - An unexpected error occurred while processing the request",
}
FAULT_CODES = {Fault.HTTP_500: 500, Fault.HTTP_503: 455, Fault.RATE_LIMIT: 429, Fault.DAILY_QUOTA: 433,
               Fault.INSUFFICIENT_QUOTA: 402, Fault.AUTH: 401}
BLOCKED_PROMPT = "Invalid prompt: prompt contains prohibited content"
BLOCKED_IMAGE = "Generated image was blocked: content policy"


class KieError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _ms(moment: datetime | None = None) -> int:
    return int((moment or datetime.now(UTC)).timestamp() * 1000)


@dataclass
class Task:
    id: str
    endpoint: Endpoint
    body: dict[str, Any]
    decision: Decision | None = None
    state: str = "waiting"
    result_urls: list[str] = field(default_factory=list)
    fail_code: str = ""
    fail_msg: str = ""
    created_ms: int = field(default_factory=_ms)
    updated_ms: int = field(default_factory=_ms)
    completed_ms: int | None = None
    cost_time_ms: int | None = None

    def move(self, state: str) -> None:
        self.state = state
        self.updated_ms = _ms()

    def record(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "taskId": self.id, "model": self.body.get("model", MODEL), "state": self.state,
            "param": json.dumps(self.body, separators=(",", ":"), ensure_ascii=False),
            "resultJson": json.dumps({"resultUrls": self.result_urls}, separators=(",", ":"))
            if self.state == "success" else "",
            "failCode": self.fail_code, "failMsg": self.fail_msg,
        }
        if self.cost_time_ms is not None:
            data["costTime"] = self.cost_time_ms
        if self.completed_ms is not None:
            data["completeTime"] = self.completed_ms
        data.update(createTime=self.created_ms, updateTime=self.updated_ms)
        return {"code": 200, "msg": "success", "data": data}


def parse_input(body: Any) -> tuple[dict[str, Any], list[str], str, str, str]:
    """Validate a createTask body against the nano-banana-pro schema: (body, image URLs, ratio, resolution, mime)."""
    if not isinstance(body, dict):
        raise KieError(422, "request body must be a JSON object")
    if body.get("model") != MODEL:
        raise KieError(422, "Page does not exist or is not published")
    callback = body.get("callBackUrl")
    if callback is not None and not (isinstance(callback, str) and callback.startswith(("http://", "https://"))):
        raise KieError(422, "callBackUrl must be a URL")
    data = body.get("input")
    if not isinstance(data, dict):
        raise KieError(422, "input is required")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise KieError(422, "input.prompt is required")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise KieError(422, f"input.prompt must be at most {MAX_PROMPT_CHARS} characters")
    urls = data.get("image_input") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) and u.startswith(("http://", "https://"))
                                             for u in urls):
        raise KieError(422, "input.image_input must be an array of file URLs")
    if len(urls) > MAX_IMAGE_INPUTS:
        raise KieError(422, f"input.image_input supports up to {MAX_IMAGE_INPUTS} images")
    ratio = str(data.get("aspect_ratio") or "1:1")
    resolution = str(data.get("resolution") or "1K")
    fmt = str(data.get("output_format") or "png")
    for name, value, allowed in (("aspect_ratio", ratio, ASPECT_RATIOS), ("resolution", resolution, RESOLUTIONS),
                                 ("output_format", fmt, OUTPUT_FORMATS)):
        if value not in allowed:
            raise KieError(422, f"input.{name} must be one of {', '.join(allowed)}")
    return body, list(urls), ratio, resolution, FORMATS[fmt]


class KieApi:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.tasks: dict[str, Task] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/jobs/createTask", self.create, methods=["POST"]),
            Route("/api/v1/jobs/recordInfo", self.record_info, methods=["GET"]),
            Route("/api/file-base64-upload", self.upload_base64, methods=["POST"]),
            Route("/api/file-stream-upload", self.upload_stream, methods=["POST"]),
        ]

    def _endpoint(self, request: Request) -> Endpoint | None:
        return self.state.endpoint(provider_name(request), "kie")

    def _envelope(self, ep: Endpoint, code: int, body: dict[str, Any], *, generate: bool = False) -> Response:
        status = code if code != 200 and ep.profile.error_status == "code" else 200
        return counted(self.state.ledger, ep, status, body, generate=generate)

    def _error(self, ep: Endpoint, err: KieError, *, generate: bool = False) -> Response:
        # `data: null` as in the error body a public client logged (captures: create-task.error-433)
        return self._envelope(ep, err.code, {"code": err.code, "msg": err.msg, "data": None}, generate=generate)

    def _check_key(self, ep: Endpoint, request: Request) -> None:
        if not ep.accepts_key(bearer_token(request)):
            raise KieError(401, MESSAGES[401])

    async def create(self, request: Request) -> Response:
        ep = self._endpoint(request)
        if ep is None:
            return json_response({"code": 404, "msg": "Not Found"}, 404)
        try:
            self._check_key(ep, request)
            try:
                raw = json.loads(await request.body() or b"{}")
            except ValueError:
                raise KieError(422, "request body is not JSON") from None
            body, urls, ratio, resolution, mime = parse_input(raw)
            admission = ep.limiter.admit()
            if not admission.ok:
                raise KieError(429, MESSAGES[429])
            decision = self.state.decide(ep, body["input"]["prompt"], sha256_hex(
                json.dumps([body["input"]["prompt"], ratio, resolution, mime, urls]).encode()))
            if decision.fault is not None and decision.fault.is_error:
                code = FAULT_CODES[decision.fault]
                raise KieError(code, MESSAGES[code])
        except KieError as err:
            return self._error(ep, err, generate=True)
        task = Task(id=f"task_{MODEL}_{_ms()}{new_id(6)}", endpoint=ep, body=body, decision=decision)
        self._forget_old()
        self.tasks[task.id] = task
        files_base = root_url(request)
        asyncio.get_running_loop().create_task(self._run(task, urls, ratio, resolution, mime, files_base))
        return self._envelope(ep, 200, {"code": 200, "msg": "success", "data": {"taskId": task.id}}, generate=True)

    def _forget_old(self) -> None:
        excess = len(self.tasks) - MAX_TASKS + 1
        if excess > 0:
            for tid in [t for t, task in self.tasks.items() if task.state in ("success", "fail")][:excess]:
                del self.tasks[tid]

    async def _run(self, task: Task, urls: list[str], ratio: str, resolution: str, mime: str,
                   files_base: str) -> None:
        assert task.decision is not None
        await asyncio.sleep(STEP_S)
        task.move("queuing")
        await asyncio.sleep(STEP_S)
        task.move("generating")
        begun = time.monotonic()
        refs: list[str] = []
        first_ratio: str | None = None
        for i, got in enumerate(await fetch_urls(urls)):
            if got is None or image_ratio(got) is None:
                await self._end(task, "fail", code="422", msg=f"image_input[{i}] could not be downloaded")
                return
            refs.append(sha256_hex(got))
            first_ratio = first_ratio or image_ratio(got)
        if ratio == "auto":
            ratio = first_ratio or "1:1"
        gen_request = GenRequest(task.body["input"]["prompt"], ratio, resolution, mime, tuple(refs))
        gen = await self.state.generate(task.endpoint, gen_request, task.decision)
        task.cost_time_ms = int((time.monotonic() - begun) * 1000)
        if gen.image is None:
            code, msg = {Fault.BLOCK_PROMPT: ("422", BLOCKED_PROMPT), Fault.BLOCK_IMAGE: ("422", BLOCKED_IMAGE)}.get(
                gen.fault or Fault.REFUSE, ("501", "Generation failed"))
            await self._end(task, "fail", code=code, msg=msg)
            return
        data = gen.image
        if gen.fault is Fault.TRUNCATED:
            data = data[: len(data) // 2]
        elif gen.fault is Fault.MALFORMED:
            data = b"<html><body>upstream error</body></html>"
        blob = self.state.files.put(data, mime)
        task.result_urls = [f"{files_base}/_sandbox/files/{blob.id}.{EXT[mime]}"]
        self.state.charge(task.endpoint, [gen])
        await self._end(task, "success")

    async def _end(self, task: Task, state: str, *, code: str = "", msg: str = "") -> None:
        task.fail_code, task.fail_msg = code, msg
        task.completed_ms = _ms()
        task.move(state)
        callback = task.body.get("callBackUrl")
        if isinstance(callback, str):
            try:
                async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S) as client:
                    await client.post(callback, json=task.record())
            except httpx.HTTPError:
                pass  # a lost callback: the client polls

    async def record_info(self, request: Request) -> Response:
        ep = self._endpoint(request)
        if ep is None:
            return json_response({"code": 404, "msg": "Not Found"}, 404)
        try:
            self._check_key(ep, request)
            task_id = request.query_params.get("taskId")
            if not task_id:
                raise KieError(400, "taskId parameter is required")
            if not ep.query_limiter.admit().ok:  # Kie documents 10 queries a second per key
                raise KieError(429, MESSAGES[429])
            task = self.tasks.get(task_id)
            if task is None or task.endpoint.name != ep.name:
                raise KieError(404, "Task not found")
        except KieError as err:
            return self._error(ep, err)
        return self._envelope(ep, 200, task.record())

    # --- file upload API --------------------------------------------------------------------------------

    def _upload_error(self, ep: Endpoint, code: int, msg: str) -> Response:
        return self._envelope(ep, code, {"success": False, "code": code, "msg": msg})

    def _stored(self, ep: Endpoint, request: Request, data: bytes, path: str, name: str | None) -> Response:
        mime = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg" if data.startswith(b"\xff\xd8") \
            else "image/webp" if data[8:12] == b"WEBP" else "application/octet-stream"
        blob = self.state.files.put(data, mime, display_name=name or "")
        file_name = name or f"{blob.id}.{EXT.get(mime, 'bin')}"
        result = {"fileName": file_name, "filePath": f"{path}/{file_name}",
                  "downloadUrl": f"{root_url(request)}/_sandbox/files/{blob.id}.{EXT.get(mime, 'bin')}",
                  "fileSize": len(data), "mimeType": mime,
                  "uploadedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"}
        return self._envelope(ep, 200, {"success": True, "code": 200, "msg": "File uploaded successfully",
                                        "data": result})

    def _upload_admit(self, request: Request) -> Endpoint | Response:
        """The simulated provider an upload is for, or the file service's refusal (404, 401 for a bad key)."""
        ep = self._endpoint(request)
        if ep is None:
            return json_response({"success": False, "code": 404, "msg": "Not Found"}, 404)
        if not ep.accepts_key(bearer_token(request)):
            return self._upload_error(ep, 401, "Authentication failed: Invalid API Key")
        return ep

    async def upload_base64(self, request: Request) -> Response:
        ep = self._upload_admit(request)
        if isinstance(ep, Response):
            return ep
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("base64Data"), str):
            return self._upload_error(ep, 400, "Missing required parameter: base64Data")
        if not isinstance(body.get("uploadPath"), str) or not body["uploadPath"]:
            return self._upload_error(ep, 400, "Missing required parameter: uploadPath")
        try:
            data = base64.b64decode(body["base64Data"].split(",", 1)[-1], validate=True)
        except (binascii.Error, ValueError):
            return self._upload_error(ep, 400, "Base64 decoding failed: Invalid Base64 format")
        name = body.get("fileName") if isinstance(body.get("fileName"), str) else None
        return self._stored(ep, request, data, body["uploadPath"], name)

    async def upload_stream(self, request: Request) -> Response:
        ep = self._upload_admit(request)
        if isinstance(ep, Response):
            return ep
        form = await request.form()
        upload, path, name = form.get("file"), form.get("uploadPath"), form.get("fileName")
        if upload is None or isinstance(upload, str):
            return self._upload_error(ep, 400, "Missing required parameter: file")
        if not isinstance(path, str) or not path:
            return self._upload_error(ep, 400, "Missing required parameter: uploadPath")
        data = await upload.read()
        return self._stored(ep, request, data, path, name if isinstance(name, str) else None)
