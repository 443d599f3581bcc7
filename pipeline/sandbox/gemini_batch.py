"""Gemini Batch API (PROVIDERS.md §3): create, get, list, cancel, delete; results inline or as a JSONL file.

A job is PENDING at creation, RUNNING after a quarter of `batch_delay_s` and SUCCEEDED after all of it;
its images are billed then, at the batch price. Prompt triggers act per item (see faults.py); a
displayName containing `[sandbox:batch-failed]` or `[sandbox:batch-expired]` ends the job FAILED or
EXPIRED, and an error trigger such as `[sandbox:503]` in the displayName fails the create call itself.
Jobs are visible only under the provider name that created them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.clock import utcnow
from pipeline.sandbox.faults import Fault, parse_triggers
from pipeline.sandbox.files import new_id
from pipeline.sandbox.gemini import GeminiBase, not_found
from pipeline.sandbox.gemini_files import GeminiFiles
from pipeline.sandbox.gemini_wire import BadRequest, error_body, fault_error, parse_generate, response_body
from pipeline.sandbox.generation import BATCH_RATES, Generated, blocked_cost
from pipeline.sandbox.http import rfc3339, token
from pipeline.sandbox.state import Decision, Endpoint, SandboxState

TYPE_BATCH = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
TYPE_OUTPUT = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
#: inline batch requests must stay under this size (20 MB)
MAX_INLINE_BYTES = 20 * 1024 * 1024
#: default and largest page of GET batches
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: jobs kept; beyond this the oldest finished ones are forgotten
MAX_JOBS = 1000
#: items rendered at once while a job runs
RENDER_CONCURRENCY = 4
#: google.rpc.Code numbers (googleapis/googleapis google/rpc/code.proto) of the statuses the sandbox answers
RPC_CODES = {"INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
             "INTERNAL": 13, "UNAVAILABLE": 14, "UNAUTHENTICATED": 16}
#: faults a batch item answers with its own google.rpc status (tests/providers/captures/google/batch-item-error-*:
#: the canonical texts of google/rpc/code.proto), not the generateContent error mapped to one
ITEM_ERRORS = {
    Fault.AUTH: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    Fault.HANG: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
TERMINAL = ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED")


@dataclass
class BatchItem:
    key: str | None
    request: Any
    #: filled when the job runs: {"response": ...} or {"error": ...}
    result: dict[str, Any] | None = None


@dataclass
class BatchJob:
    name: str
    model: str
    display_name: str
    endpoint: Endpoint
    items: list[BatchItem]
    file_mode: bool
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)
    ended: datetime | None = None
    state: str = "BATCH_STATE_PENDING"
    responses_file: str | None = None
    task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def set_state(self, state: str) -> None:
        self.state = state
        self.updated = utcnow()
        if state in TERMINAL:
            self.ended = self.updated

    def stats(self) -> dict[str, str]:
        stats = {"requestCount": str(len(self.items))}
        if self.state != "BATCH_STATE_SUCCEEDED":
            pending = sum(1 for it in self.items if it.result is None)
            if pending and not self.done:
                stats["pendingRequestCount"] = str(pending)
            return stats
        ok = sum(1 for it in self.items if it.result is not None and "response" in it.result)
        failed = len(self.items) - ok
        if ok:
            stats["successfulRequestCount"] = str(ok)
        if failed:
            stats["failedRequestCount"] = str(failed)
        return stats

    def output(self) -> dict[str, Any] | None:
        if self.state != "BATCH_STATE_SUCCEEDED":
            return None
        if self.file_mode:
            return {"responsesFile": self.responses_file}
        inlined = []
        for it in self.items:
            entry = dict(it.result or {})
            if it.key is not None:
                entry["metadata"] = {"key": it.key}
            inlined.append(entry)
        return {"inlinedResponses": {"inlinedResponses": inlined}}

    def operation(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "@type": TYPE_BATCH,
            "model": f"models/{self.model}",
            "displayName": self.display_name,
            "createTime": rfc3339(self.created),
            "updateTime": rfc3339(self.updated),
            "batchStats": self.stats(),
            "state": self.state,
            "name": self.name,
        }
        if self.ended is not None:
            meta["endTime"] = rfc3339(self.ended)
        op: dict[str, Any] = {"name": self.name, "metadata": meta}
        if self.done:
            op["done"] = True
        if self.state in ("BATCH_STATE_FAILED", "BATCH_STATE_EXPIRED"):
            op["error"] = {
                "code": 13 if self.state == "BATCH_STATE_FAILED" else 4,
                "message": _END_MESSAGE[self.state],
            }
        output = self.output()
        if output is not None:
            meta["output"] = output
            op["response"] = {"@type": TYPE_OUTPUT, **output}
        return op


_END_MESSAGE = {
    "BATCH_STATE_FAILED": "The batch job failed: internal error.",
    "BATCH_STATE_EXPIRED": "The batch job expired: it was running or pending for more than 48 hours.",
}


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj[camel] if camel in obj else obj.get(snake)


class GeminiBatchApi(GeminiBase):
    def __init__(self, state: SandboxState, files: GeminiFiles) -> None:
        super().__init__(state)
        self.files = files
        self.jobs: dict[str, BatchJob] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/{version}/batches", self.list_batches, methods=["GET"]),
            Route("/{version}/batches/{batch_action}", self.batch_get, methods=["GET"]),
            Route("/{version}/batches/{batch_action}", self.batch_post, methods=["POST"]),
            Route("/{version}/batches/{batch_action}", self.batch_delete, methods=["DELETE"]),
        ]

    protocol = "gemini-batch"

    # -- create ----------------------------------------------------------------------------------------------

    async def create(self, request: Request, model: str) -> Response:
        ep = self.admit(request, generate=True)
        if isinstance(ep, Response):
            return ep
        raw = await request.body()
        if len(raw) > MAX_INLINE_BYTES:
            message = f"Request payload size exceeds the limit: {MAX_INLINE_BYTES} bytes."
            return self.answer(ep, 400, error_body(400, "INVALID_ARGUMENT", message), generate=True)
        try:
            display_name, items, file_mode = self._parse_create(json.loads(raw or b"{}"))
        except (ValueError, BadRequest) as e:
            message = str(e) if isinstance(e, BadRequest) else "Invalid JSON payload received."
            return self.answer(ep, 400, error_body(400, "INVALID_ARGUMENT", message), generate=True)
        refused = self.quota_error(ep, model)
        if refused is not None:
            return refused
        fault = parse_triggers(display_name).fault
        if fault is not None and fault.is_error:
            status, body = fault_error(
                fault, model, ep.limiter.rpm, ep.limiter.rpd, ep.limiter.seconds_to_day_reset()
            )
            return self.answer(ep, status, body, generate=True)
        job = BatchJob(f"batches/{new_id(36)}", model, display_name, ep, items, file_mode)
        self._forget_old()
        self.jobs[job.name] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job))
        return self.answer(ep, 200, job.operation(), generate=True)

    def _forget_old(self) -> None:
        excess = len(self.jobs) - MAX_JOBS + 1
        if excess > 0:
            for name in [n for n, j in self.jobs.items() if j.done][:excess]:
                del self.jobs[name]

    def _parse_create(self, body: Any) -> tuple[str, list[BatchItem], bool]:
        if not isinstance(body, dict) or not isinstance(body.get("batch"), dict):
            raise BadRequest("* BatchGenerateContentRequest.batch: batch is required")
        batch = body["batch"]
        display_name = str(_get(batch, "displayName", "display_name") or "")
        config = _get(batch, "inputConfig", "input_config")
        if not isinstance(config, dict):
            raise BadRequest("* GenerateContentBatch.input_config: input_config is required")
        file_name = _get(config, "fileName", "file_name")
        if file_name:
            return display_name, self._items_from_file(str(file_name)), True
        requests = config.get("requests")
        listed = requests.get("requests") if isinstance(requests, dict) else None
        if not isinstance(listed, list) or not listed:
            raise BadRequest("* GenerateContentBatch.input_config: requests or file_name is required")
        items = []
        for entry in listed:
            if not isinstance(entry, dict):
                raise BadRequest("Invalid value at 'batch.input_config.requests.requests': expected objects")
            metadata = entry.get("metadata") or {}
            key = metadata.get("key") if isinstance(metadata, dict) else None
            items.append(BatchItem(None if key is None else str(key), entry.get("request")))
        return display_name, items, False

    def _items_from_file(self, file_name: str) -> list[BatchItem]:
        blob = self.files.get(file_name)
        if blob is None:
            raise BadRequest(f"File {file_name} not found or not accessible.")
        items: list[BatchItem] = []
        for n, line in enumerate(blob.data.decode("utf-8", "replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise BadRequest(f"Invalid JSON in {file_name} at line {n}.") from None
            if not isinstance(entry, dict):
                raise BadRequest(f"Invalid request in {file_name} at line {n}: expected an object.")
            key = entry.get("key")
            items.append(BatchItem(str(key) if key is not None else str(len(items)), entry.get("request")))
        if not items:
            raise BadRequest(f"File {file_name} holds no requests.")
        return items

    # -- running ---------------------------------------------------------------------------------------------

    async def _run(self, job: BatchJob) -> None:
        delay = self.state.profile.batch_delay_s
        await asyncio.sleep(delay / 4)
        job.set_state("BATCH_STATE_RUNNING")
        await asyncio.sleep(delay * 3 / 4)
        if "[sandbox:batch-failed]" in job.display_name or "[sandbox:batch-expired]" in job.display_name:
            failed = "[sandbox:batch-failed]" in job.display_name
            job.set_state("BATCH_STATE_FAILED" if failed else "BATCH_STATE_EXPIRED")
            return
        limit = asyncio.Semaphore(RENDER_CONCURRENCY)

        async def one(item: BatchItem) -> Generated | None:
            async with limit:
                return await self._run_item(job, item)

        made = await asyncio.gather(*(one(item) for item in job.items))
        self.state.charge(job.endpoint, [g for g in made if g is not None])
        if job.file_mode:
            lines = [
                json.dumps({"key": it.key, **(it.result or {})}, separators=(",", ":")) for it in job.items
            ]
            job.responses_file = self.files.store_generated(
                ("\n".join(lines) + "\n").encode(), "application/jsonl", f"{job.name} responses"
            )
        job.set_state("BATCH_STATE_SUCCEEDED")

    async def _run_item(self, job: BatchJob, item: BatchItem) -> Generated | None:
        ep = job.endpoint
        try:
            parsed = parse_generate(item.request, ep.profile.output_mime)
        except BadRequest as e:
            item.result = {"error": {"code": RPC_CODES["INVALID_ARGUMENT"], "message": str(e)}}
            return None
        decision = self.state.decide(ep, parsed.gen.prompt, parsed.gen.fingerprint)
        if decision.fault in ITEM_ERRORS:  # per-item statuses only a batch answers (python-genai JobError)
            rpc_name, message = ITEM_ERRORS[decision.fault]
            item.result = {"error": {"code": RPC_CODES[rpc_name], "message": message}}
            return None
        if decision.fault is not None and decision.fault.is_error:
            _, body = fault_error(decision.fault, job.model, ep.limiter.rpm, ep.limiter.rpd, 0.0)
            # a batch item's error is a google.rpc.Status: its code is the rpc code, not the HTTP status
            rpc = RPC_CODES.get(str(body["error"]["status"]), RPC_CODES["INTERNAL"])
            item.result = {"error": {"code": rpc, "message": body["error"]["message"]}}
            return None
        if decision.fault is Fault.MALFORMED:
            decision = Decision(None)  # no cut body inside a batch
        gen = await self.state.generate(ep, parsed.gen, decision, batch=True, latency=False)
        body = response_body(gen, parsed, job.model, token(), thought_parts=ep.profile.thought_parts)
        item.result = {"response": body}
        if gen.image is None and ep.profile.price_per_image is None:  # billed for its tokens, as generateContent
            self.state.ledger.bill(ep.name, ep.protocol, 0, blocked_cost(body["usageMetadata"], BATCH_RATES))
        return gen

    # -- get / list / cancel / delete ------------------------------------------------------------------------

    def _job(self, request: Request, batch_id: str) -> tuple[Endpoint, BatchJob] | Response:
        """The batch a request names, with its simulated provider, or the answer refusing it (404 for an unknown
        id or another provider's batch, the auth error)."""
        ep = self.admit(request)
        if isinstance(ep, Response):
            return ep
        job = self.jobs.get(f"batches/{batch_id}")
        if job is None or job.endpoint.name != ep.name:
            return self.missing(ep)
        return ep, job

    async def batch_get(self, request: Request) -> Response:
        batch_id = str(request.path_params["batch_action"])
        if ":" in batch_id:
            return not_found()
        found = self._job(request, batch_id)
        if isinstance(found, Response):
            return found
        ep, job = found
        return self.answer(ep, 200, job.operation())

    async def batch_post(self, request: Request) -> Response:
        batch_id, _, action = str(request.path_params["batch_action"]).partition(":")
        if action != "cancel":
            return not_found()
        found = self._job(request, batch_id)
        if isinstance(found, Response):
            return found
        ep, job = found
        if not job.done:
            if job.task is not None:
                job.task.cancel()
            job.set_state("BATCH_STATE_CANCELLED")
        return self.answer(ep, 200, {})

    async def batch_delete(self, request: Request) -> Response:
        found = self._job(request, str(request.path_params["batch_action"]))
        if isinstance(found, Response):
            return found
        ep, job = found
        if job.task is not None and not job.done:
            job.task.cancel()
        del self.jobs[job.name]
        return self.answer(ep, 200, {})

    async def list_batches(self, request: Request) -> Response:
        ep = self.admit(request)
        if isinstance(ep, Response):
            return ep
        try:
            size = min(MAX_PAGE_SIZE, int(request.query_params.get("pageSize") or DEFAULT_PAGE_SIZE))
            start = int(request.query_params.get("pageToken") or 0)
        except ValueError:
            return self.answer(ep, 400, error_body(400, "INVALID_ARGUMENT", "Invalid page size or token."))
        mine = [j for j in reversed(self.jobs.values()) if j.endpoint.name == ep.name]
        page = mine[start : start + max(1, size)]
        body: dict[str, Any] = {"operations": [j.operation() for j in page]}
        if start + len(page) < len(mine):
            body["nextPageToken"] = str(start + len(page))
        return self.answer(ep, 200, body)
