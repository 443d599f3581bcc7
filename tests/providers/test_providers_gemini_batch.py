"""GeminiBatchClient against captured Batch API bodies on httpx.MockTransport (PROVIDERS.md §3)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.errors import (
    ContentBlocked,
    InvalidRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from pipeline.providers.base import ImageRequest, ImageResult
from pipeline.providers.gemini_batch import BatchState, BatchStatus, GeminiBatchClient, normalize_state
from tests.providers.provider_wire import (
    GEMINI_IMAGE_SAFETY,
    KEY,
    Recorder,
    assert_no_key,
    config,
    gemini_429,
    gemini_ok,
    respond,
    sized,
)

NAME = "batches/4m855v7q30kc7gtzcigdg9m72o87s08w33vp"
REQS = {k: ImageRequest(f"prompt {k}", "1K", "1:1", key=k) for k in ("a", "b", "c", "d")}
META_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"


def pending_op(
    display: str = "run-1", state: str = "BATCH_STATE_PENDING", create: str = "2025-12-10T18:27:01Z"
) -> dict:
    return {
        "name": NAME,
        "metadata": {
            "@type": META_TYPE,
            "model": "models/gemini-3-pro-image-preview",
            "displayName": display,
            "createTime": create,
            "updateTime": create,
            "batchStats": {"requestCount": "4", "pendingRequestCount": "4"},
            "state": state,
            "name": NAME,
        },
    }


def done_op(items: list[dict[str, Any]], where: str = "both") -> dict[str, Any]:
    inl = {"inlinedResponses": {"inlinedResponses": items}}
    meta: dict[str, Any] = {
        "@type": META_TYPE,
        "state": "BATCH_STATE_SUCCEEDED",
        "displayName": "run-1",
        "batchStats": {"requestCount": "4", "successfulRequestCount": "2", "failedRequestCount": "2"},
    }
    op: dict[str, Any] = {"name": NAME, "done": True, "metadata": meta}
    if where in ("both", "metadata"):
        meta["output"] = inl
    if where in ("both", "response"):
        op["response"] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
            **inl,
        }
    return op


def client(rec: Recorder, **kw: Any) -> GeminiBatchClient:
    return GeminiBatchClient(config("google-batch"), KEY, rec.client(), **kw)


def items() -> list[dict[str, Any]]:
    return [
        {"response": gemini_ok(sized()), "metadata": {"key": "a"}},
        {
            "error": {
                "code": 400,
                "message": "Invalid argument: bad imageSize",
                "status": "INVALID_ARGUMENT",
            },
            "metadata": {"key": "b"},
        },
        {"response": GEMINI_IMAGE_SAFETY, "metadata": {"key": "c"}},
        {"response": gemini_ok(sized()), "metadata": {"key": "unknown-key"}},
    ]


def check(results: dict[str, ImageResult | ProviderError]) -> None:
    a = results["a"]
    assert isinstance(a, ImageResult)
    # batch rates: 1120 x $60/M + 1400 x $6/M + 32 x $1/M
    assert (a.cost_usd, a.cost_source) == (Decimal("0.075632"), "usage")
    assert type(results["b"]) is InvalidRequest and "bad imageSize" in results["b"].message
    assert type(results["c"]) is ContentBlocked and results["c"].message.startswith(
        "image blocked: IMAGE_SAFETY"
    )
    assert type(results["d"]) is ProviderUnavailable and results["d"].error_class == "missing"
    assert set(results) == set(REQS)


def test_create_inline_wire() -> None:
    rec = Recorder([respond(200, pending_op())])
    handle = client(rec).create("run-1", list(REQS.items()))
    assert handle.name == NAME and handle.mode == "inline" and handle.keys == ("a", "b", "c", "d")
    sent = rec.requests[0]
    assert sent.url == "https://provider.test/v1beta/models/gemini-3-pro-image-preview:batchGenerateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    batch = rec.json_body()["batch"]
    assert batch["displayName"] == "run-1" and batch["model"] == "models/gemini-3-pro-image-preview"
    first = batch["inputConfig"]["requests"]["requests"][0]
    assert first["metadata"] == {"key": "a"}
    assert first["request"]["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K"}


def test_create_file_mode_uploads_jsonl() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/upload/v1beta/files" and "upload_id" not in request.url.params:
            return httpx.Response(
                200,
                headers={
                    "x-goog-upload-url": "https://provider.test/upload/v1beta/files?upload_id=u1",
                    "x-goog-upload-status": "active",
                },
            )
        if request.url.params.get("upload_id") == "u1":
            return httpx.Response(
                200,
                json={"file": {"name": "files/in123", "mimeType": "application/jsonl"}},
                headers={"x-goog-upload-status": "final"},
            )
        return respond(200, pending_op())

    rec = Recorder([answer])
    handle = client(rec, inline_max_bytes=100).create("run-1", list(REQS.items()))
    assert (handle.mode, handle.input_file) == ("file", "files/in123")
    start, upload, create = rec.requests
    assert (
        start.headers["x-goog-upload-protocol"] == "resumable"
        and start.headers["x-goog-upload-command"] == "start"
    )
    assert start.headers["x-goog-upload-header-content-length"] == str(len(upload.content))
    assert json.loads(start.content) == {"file": {"displayName": "run-1"}}
    assert (
        upload.headers["x-goog-upload-command"] == "upload, finalize"
        and upload.headers["x-goog-upload-offset"] == "0"
    )
    lines = [json.loads(x) for x in upload.content.decode().splitlines()]
    assert [x["key"] for x in lines] == ["a", "b", "c", "d"] and "contents" in lines[0]["request"]
    assert json.loads(create.content)["batch"]["inputConfig"] == {"fileName": "files/in123"}


def test_create_rejects_duplicate_keys() -> None:
    with pytest.raises(Exception, match="unique"):
        client(Recorder([respond(200, pending_op())])).create("x", [("a", REQS["a"]), ("a", REQS["b"])])


def test_get_pending_counts_from_strings() -> None:
    rec = Recorder([respond(200, pending_op())])
    status = client(rec).get(NAME)
    assert rec.requests[0].url == f"https://provider.test/v1beta/{NAME}"
    assert (status.state, status.done, status.request_count, status.pending_count) == (
        BatchState.PENDING,
        False,
        4,
        4,
    )
    assert status.display_name == "run-1"


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("BATCH_STATE_RUNNING", BatchState.RUNNING),
        ("JOB_STATE_RUNNING", BatchState.RUNNING),
        ("JOB_STATE_SUCCEEDED", BatchState.SUCCEEDED),
        ("BATCH_STATE_CANCELLED", BatchState.CANCELLED),
        ("JOB_STATE_QUEUED", BatchState.PENDING),
        ("BATCH_STATE_EXPIRED", BatchState.EXPIRED),
        ("JOB_STATE_PARTIALLY_SUCCEEDED", BatchState.SUCCEEDED),
        ("nonsense", BatchState.UNSPECIFIED),
    ],
)
def test_state_names(raw: str, state: BatchState) -> None:
    assert normalize_state(raw) is state


@pytest.mark.parametrize("where", ["both", "metadata", "response"])
def test_results_inline_item_by_item(where: str) -> None:
    rec = Recorder([respond(200, done_op(items(), where))])
    c = client(rec)
    status = c.get(NAME)
    assert status.done and status.state is BatchState.SUCCEEDED and status.failed_count == 2
    check(c.results(status, REQS))


def test_results_from_responses_file() -> None:
    lines = [
        {"key": i["metadata"]["key"], **{k: v for k, v in i.items() if k != "metadata"}} for i in items()
    ]
    jsonl = "\n".join(json.dumps(x) for x in lines) + "\n{broken line\n"
    op = done_op([])
    op["metadata"]["output"] = {"responsesFile": "files/out42"}
    op.pop("response")

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1beta/files/out42:download":
            assert request.url.params["alt"] == "media"
            return httpx.Response(200, text=jsonl)
        return respond(200, op)

    rec = Recorder([answer])
    c = client(rec)
    check(c.results(c.get(NAME), REQS))


def test_item_429_is_retryable_rate_limit() -> None:
    op = done_op([{"error": gemini_429("20s")["error"], "metadata": {"key": "a"}}])
    c = client(Recorder([respond(200, op)]))
    err = c.results(c.get(NAME), {"a": REQS["a"]})["a"]
    assert type(err) is RateLimited and err.retry_after_s == 20.0


@pytest.mark.parametrize(
    ("state", "error_class"),
    [
        ("BATCH_STATE_FAILED", "batch_failed"),
        ("BATCH_STATE_EXPIRED", "batch_expired"),
        ("BATCH_STATE_CANCELLED", "batch_cancelled"),
    ],
)
def test_batch_level_end_without_output(state: str, error_class: str) -> None:
    op = pending_op(state=state)
    op["error"] = {"code": 13, "message": "internal"}
    c = client(Recorder([respond(200, op)]))
    status = c.get(NAME)
    assert status.done
    results = c.results(status, REQS)
    assert all(isinstance(r, ProviderUnavailable) and r.error_class == error_class for r in results.values())


def test_cancel() -> None:
    rec = Recorder([respond(200, {})])
    client(rec).cancel(NAME)
    assert (
        rec.requests[0].method == "POST"
        and rec.requests[0].url == f"https://provider.test/v1beta/{NAME}:cancel"
    )


def test_list_pages_and_find_by_display_name() -> None:
    pages = {
        None: {
            "operations": [pending_op("other"), pending_op("run-7", create="2025-12-10T10:00:00Z")],
            "nextPageToken": "p2",
        },
        "p2": {
            "operations": [{**pending_op("run-7", create="2025-12-10T11:00:00Z"), "name": "batches/newer"}]
        },
    }
    rec = Recorder([lambda r: respond(200, pages[r.url.params.get("pageToken")])])
    c = client(rec)
    assert [s.display_name for s in c.list(page_size=2)] == ["other", "run-7", "run-7"]
    assert rec.requests[0].url.params["pageSize"] == "2"
    found = c.find_by_display_name("run-7")
    assert found is not None and found.name == "batches/newer"
    assert c.find_by_display_name("never") is None


def test_create_errors_classified_and_key_free() -> None:
    with pytest.raises(ProviderError) as info:
        client(Recorder([respond(429, gemini_429("3s"))])).create("x", [("a", REQS["a"])])
    assert type(info.value) is RateLimited and info.value.retry_after_s == 3.0
    with pytest.raises(ProviderError) as info:
        client(Recorder([httpx.ReadTimeout("slow")])).create("x", [("a", REQS["a"])])
    assert type(info.value) is ProviderTimeout and info.value.maybe_billed
    body = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": f"bad key {KEY}"}}
    with pytest.raises(ProviderError) as info:
        client(Recorder([respond(400, body)])).get(NAME)
    assert_no_key(info.value)


def test_status_from_bare_batch_object() -> None:
    status = BatchStatus.from_operation({"name": NAME, "state": "JOB_STATE_SUCCEEDED", "displayName": "d"})
    assert status.state is BatchState.SUCCEEDED and status.done and status.display_name == "d"
