"""Gemini Batch API and File API: over HTTP (operation JSON per PROVIDERS.md §3) and with google-genai."""

from __future__ import annotations

import base64
import io
import json
import time
from decimal import Decimal

import httpx
import pytest
from google import genai
from google.genai import types
from PIL import Image

from pipeline.providers.base import SIZES
from pipeline.providers.pricing import blocked_call_cost
from tests.sandbox.sandbox_helpers import MODEL, gemini_body, gemini_cost

CREATE = f"/v1beta/models/{MODEL}:batchGenerateContent"
FAST = {"batch_delay_s": 0.2}


def inline_batch(prompts: list[str], name: str = "run-1") -> dict:
    return {
        "batch": {
            "displayName": name,
            "model": f"models/{MODEL}",
            "inputConfig": {
                "requests": {
                    "requests": [
                        {"request": gemini_body(p, "16:9", "1K"), "metadata": {"key": f"item-{i:04d}"}}
                        for i, p in enumerate(prompts)
                    ]
                }
            },
        }
    }


def wait_done(c: httpx.Client, name: str, prefix: str = "") -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        op = c.get(f"{prefix}/v1beta/{name}").json()
        if op.get("done"):
            return op
        time.sleep(0.05)
    raise AssertionError("batch did not finish")


def test_inline_batch_lifecycle_and_operation_json(make_sandbox):
    sb = make_sandbox({"batch_delay_s": 0.4})
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        created = c.post(
            CREATE, json=inline_batch(["one", "two [sandbox:500]", "three [sandbox:block-image]"])
        )
        assert created.status_code == 200
        op = created.json()
        assert op["name"].startswith("batches/") and "done" not in op
        meta = op["metadata"]
        assert meta["@type"].endswith("GenerateContentBatch")
        assert meta["state"] == "BATCH_STATE_PENDING"
        assert meta["batchStats"] == {"requestCount": "3", "pendingRequestCount": "3"}
        assert meta["model"] == f"models/{MODEL}" and meta["displayName"] == "run-1"
        time.sleep(0.2)
        assert c.get(f"/v1beta/{op['name']}").json()["metadata"]["state"] == "BATCH_STATE_RUNNING"
        done = wait_done(c, op["name"])
    meta = done["metadata"]
    assert meta["state"] == "BATCH_STATE_SUCCEEDED" and "endTime" in meta
    assert meta["batchStats"] == {
        "requestCount": "3",
        "successfulRequestCount": "2",
        "failedRequestCount": "1",
    }
    items = meta["output"]["inlinedResponses"]["inlinedResponses"]
    assert done["response"]["inlinedResponses"]["inlinedResponses"] == items
    assert done["response"]["@type"].endswith("GenerateContentBatchOutput")
    assert [it["metadata"]["key"] for it in items] == ["item-0000", "item-0001", "item-0002"]
    ok, failed, blocked = items
    part = ok["response"]["candidates"][0]["content"]["parts"][-1]
    with Image.open(io.BytesIO(base64.b64decode(part["inlineData"]["data"]))) as img:
        assert img.size == SIZES["16:9"]["1K"]
    # a batch item's error is a google.rpc.Status: code 13 (INTERNAL), not the HTTP 500
    assert failed["error"]["code"] == 13 and "response" not in failed
    assert blocked["response"]["candidates"][0]["finishReason"] == "IMAGE_SAFETY"
    ledger = sb.ledger()["by_provider"]["gemini-batch"]
    assert ledger["billed_images"] == 1
    # the filtered image is not billed; its prompt and thinking tokens are (at batch rates)
    blocked_usage = blocked["response"]["usageMetadata"]
    blocked_cost = blocked_call_cost(blocked_usage, batch=True)
    assert blocked_cost is not None and blocked_cost > 0
    assert Decimal(ledger["billed_usd"]) == gemini_cost(ok["response"]["usageMetadata"], batch=True) + blocked_cost


def test_batch_images_match_sync_images_and_cost_half(make_sandbox):
    sb = make_sandbox(FAST)
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        op = c.post(CREATE, json=inline_batch(["same prompt"])).json()
        item = wait_done(c, op["name"])["response"]["inlinedResponses"]["inlinedResponses"][0]
        sync = c.post(
            f"/v1beta/models/{MODEL}:generateContent", json=gemini_body("same prompt", "16:9", "1K")
        )
    batch_image = item["response"]["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"]
    sync_image = sync.json()["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"]
    assert batch_image == sync_image
    by = sb.ledger()["by_provider"]
    assert Decimal(by["gemini-batch"]["billed_usd"]) * 2 == Decimal(by["gemini"]["billed_usd"])


def test_cancel_delete_and_list(make_sandbox):
    sb = make_sandbox({"batch_delay_s": 5})
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        names = [c.post(CREATE, json=inline_batch(["x"], f"job-{i}")).json()["name"] for i in range(3)]
        assert c.post(f"/v1beta/{names[0]}:cancel").json() == {}
        cancelled = c.get(f"/v1beta/{names[0]}").json()
        assert cancelled["done"] is True and cancelled["metadata"]["state"] == "BATCH_STATE_CANCELLED"
        assert "output" not in cancelled["metadata"]
        page1 = c.get("/v1beta/batches", params={"pageSize": 2}).json()
        assert [op["name"] for op in page1["operations"]] == [names[2], names[1]]
        page2 = c.get("/v1beta/batches", params={"pageSize": 2, "pageToken": page1["nextPageToken"]}).json()
        assert [op["name"] for op in page2["operations"]] == [names[0]] and "nextPageToken" not in page2
        assert c.delete(f"/v1beta/{names[1]}").json() == {}
        missing = c.get(f"/v1beta/{names[1]}")
        assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
        # jobs are per provider name
        assert c.get(f"/p/other/v1beta/{names[2]}").status_code == 404
        assert c.get("/p/other/v1beta/batches").json() == {"operations": []}


def test_failed_and_expired_jobs(make_sandbox):
    sb = make_sandbox(FAST)
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        failed = c.post(CREATE, json=inline_batch(["x"], "a [sandbox:batch-failed]")).json()
        expired = c.post(CREATE, json=inline_batch(["x"], "b [sandbox:batch-expired]")).json()
        assert wait_done(c, failed["name"])["metadata"]["state"] == "BATCH_STATE_FAILED"
        assert wait_done(c, expired["name"])["metadata"]["state"] == "BATCH_STATE_EXPIRED"
        refused = c.post(CREATE, json=inline_batch(["x"], "c [sandbox:503]"))
        assert refused.status_code == 503
    assert sb.ledger()["billed_images"] == 0


def test_create_validation(sandbox, http):
    r = http.post(sandbox.url + CREATE, json={"batch": {"displayName": "empty"}})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    r = http.post(sandbox.url + CREATE, json={"batch": {"inputConfig": {"fileName": "files/nope"}}})
    assert r.status_code == 400 and "not found" in r.json()["error"]["message"]


def test_bad_item_is_a_per_item_error(make_sandbox):
    sb = make_sandbox(FAST)
    body = inline_batch(["fine"])
    bad = gemini_body("bad size")
    bad["generationConfig"]["imageConfig"]["imageSize"] = "1k"
    body["batch"]["inputConfig"]["requests"]["requests"].append({"request": bad, "metadata": {"key": "bad"}})
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        done = wait_done(c, c.post(CREATE, json=body).json()["name"])
    items = done["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert items[1] == {  # google.rpc.Status: 3 = INVALID_ARGUMENT
        "error": {"code": 3, "message": items[1]["error"]["message"]},
        "metadata": {"key": "bad"},
    }
    assert done["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"


def test_resumable_upload_file_batch_and_download_over_http(make_sandbox):
    sb = make_sandbox(FAST)
    lines = [json.dumps({"key": f"k{i}", "request": gemini_body(f"file {i}", "1:1", "1K")}) for i in range(3)]
    payload = ("\n".join(lines) + "\n").encode()
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        start = c.post(
            "/upload/v1beta/files",
            json={"file": {"displayName": "batch-input"}},
            headers={
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(len(payload)),
                "X-Goog-Upload-Header-Content-Type": "application/jsonl",
            },
        )
        url = start.headers["x-goog-upload-url"]
        half = len(payload) // 2
        part = c.post(
            url,
            content=payload[:half],
            headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"},
        )
        assert part.headers["x-goog-upload-status"] == "active"
        final = c.post(
            url,
            content=payload[half:],
            headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": str(half)},
        )
        assert final.headers["x-goog-upload-status"] == "final"
        file_name = final.json()["file"]["name"]
        assert final.json()["file"]["sizeBytes"] == str(len(payload))
        op = c.post(
            CREATE, json={"batch": {"displayName": "f", "inputConfig": {"fileName": file_name}}}
        ).json()
        done = wait_done(c, op["name"])
        out_file = done["metadata"]["output"]["responsesFile"]
        assert done["response"]["responsesFile"] == out_file
        assert done["metadata"]["batchStats"]["successfulRequestCount"] == "3"
        got = c.get(f"/v1beta/{out_file}:download", params={"alt": "media"})
    results = [json.loads(line) for line in got.text.splitlines()]
    assert [r["key"] for r in results] == ["k0", "k1", "k2"]
    assert all(r["response"]["candidates"][0]["finishReason"] == "STOP" for r in results)
    assert sb.ledger()["billed_images"] == 3


def test_google_genai_batches_inline(make_sandbox):
    sb = make_sandbox(FAST)
    client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=sb.url))
    config = {"response_modalities": ["IMAGE"], "image_config": {"aspect_ratio": "3:4", "image_size": "1K"}}
    src = [
        {
            "contents": [{"parts": [{"text": f"sdk {i}"}], "role": "user"}],
            "config": config,
            "metadata": {"key": f"k{i}"},
        }
        for i in range(2)
    ]
    job = client.batches.create(model=MODEL, src=src, config={"display_name": "sdk-run"})
    assert job.state == types.JobState.JOB_STATE_PENDING
    deadline = time.monotonic() + 10
    while not (job := client.batches.get(name=job.name)).done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    responses = job.dest.inlined_responses
    assert [r.metadata["key"] for r in responses] == ["k0", "k1"]
    data = responses[0].response.candidates[0].content.parts[-1].inline_data.data
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == SIZES["3:4"]["1K"]
    assert [j.name for j in client.batches.list()] == [job.name]


def test_google_genai_file_batch(make_sandbox, tmp_path):
    sb = make_sandbox(FAST)
    client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=sb.url + "/p/google-batch"))
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"key": "only", "request": gemini_body("via file", "2:3", "1K")}) + "\n")
    uploaded = client.files.upload(file=path, config=types.UploadFileConfig(mime_type="application/jsonl"))
    job = client.batches.create(model=MODEL, src=uploaded.name)
    deadline = time.monotonic() + 10
    while not (job := client.batches.get(name=job.name)).done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    raw = client.files.download(file=job.dest.file_name)
    line = json.loads(raw.decode().splitlines()[0])
    assert line["key"] == "only"
    assert sb.ledger()["by_provider"]["google-batch"]["billed_images"] == 1


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_batch_paths_under_both_versions(make_sandbox, version):
    sb = make_sandbox(FAST)
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        op = c.post(f"/{version}/models/{MODEL}:batchGenerateContent", json=inline_batch(["v"])).json()
        assert c.get(f"/{version}/{op['name']}").status_code == 200
