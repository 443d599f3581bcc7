"""The sandbox's Kie.ai protocol replays the capture corpus: each documented request, sent as documented, is
answered with the documented shapes (corpus.shape_problems), the same ledger, limits, faults and triggers as the
other protocols, and errors both as HTTP statuses and inside HTTP 200 envelopes."""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from pipeline.providers.base import SIZES
from pipeline.sandbox.server import SandboxServer
from tests.providers.corpus import Capture, captures, shape_problems

PRICES = {"1K": "0.09", "2K": "0.09", "4K": "0.12"}
PROFILE = {"providers": {
    "kie": {"protocol": "kie", "price_per_image": PRICES},
    "kie-200": {"protocol": "kie", "price_per_image": PRICES, "error_status": "200"},
    "kie-tight": {"protocol": "kie", "rpm": 1, "bucket_s": 1.0},
    "kie-keyed": {"protocol": "kie", "api_keys": ["the-right-key"]},
    "gem": {"protocol": "gemini"},
}}
DEAD_CALLBACK = "http://127.0.0.1:9/callback"  # nothing listens: the sandbox's delivery fails fast and harmlessly


@pytest.fixture
def sb(make_sandbox: Callable[..., SandboxServer]) -> SandboxServer:
    return make_sandbox(PROFILE)


def kie(name: str) -> Capture:
    found = [c for c in captures(provider="kie") if c.path.stem == name]
    assert found, name
    return found[0]


def group(route: str, predicate: Callable[[Capture], bool]) -> list[Capture]:
    return [c for c in captures(provider="kie", kind="response")
            if (c.route or "").split("?")[0] == route and predicate(c)]


def matches(answer: Any, documented: list[Capture]) -> None:
    """The answer has the documented shape of at least one capture of its group (the docs sometimes show two
    spellings, e.g. recordInfo's `msg` and `message`; the sandbox serves one)."""
    assert documented
    problems = {c.path.stem: shape_problems(answer, c.body_with(IMAGE_URL="https://x.test/i.png"))
                for c in documented}
    assert any(not p for p in problems.values()), problems


def replay(client: httpx.Client, sb: SandboxServer, c: Capture, *, account: str = "kie",
           body: Any = None, query: dict[str, str] | None = None) -> httpx.Response:
    """Send the request capture as documented (method, path, headers, body) to the sandbox account."""
    path, _, q = str(c.route).partition("?")
    params = dict(p.split("=") for p in q.split("&")) if q else {}
    params.update(query or {})
    headers = {k: v.replace("<token>", "k").replace("YOUR_API_KEY", "k") for k, v in c.headers.items()}
    payload = copy.deepcopy(c.body) if body is None else body
    content = json.dumps(payload).encode() if payload is not None else None
    return client.request(str(c.method), f"{sb.url}/p/{account}{path}", params=params, headers=headers,
                          content=content)


def wait_record(client: httpx.Client, sb: SandboxServer, task_id: str, account: str = "kie",
                seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = replay(client, sb, kie("record-info.request"), account=account, query={"taskId": task_id})
        assert got.status_code == 200
        answer: dict[str, Any] = got.json()
        if seen is not None:
            seen.append(answer)
        if answer["data"]["state"] in ("success", "fail"):
            return answer
        time.sleep(0.12)  # under recordInfo's documented 10 queries a second
    raise AssertionError("task did not finish")


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def test_create_then_record_replay_the_documented_shapes(sb: SandboxServer, http: httpx.Client) -> None:
    doc = kie("create-task.request")
    body = {**copy.deepcopy(doc.body), "callBackUrl": DEAD_CALLBACK}
    created = replay(http, sb, doc, body=body)
    assert created.status_code == 200
    matches(created.json(), [kie("create-task.ok")])
    task_id = created.json()["data"]["taskId"]
    seen: list[dict[str, Any]] = []
    done = wait_record(http, sb, task_id, seen=seen)
    for answer in seen[:-1]:  # every unfinished answer is one of the documented states
        state = answer["data"]["state"]
        assert state in ("waiting", "queuing", "generating")
        matches(answer, [kie(f"record-info.{state}")])
    matches(done, group("/api/v1/jobs/recordInfo", lambda c: c.expect.get("outcome") == "image"))
    assert json.loads(done["data"]["param"]) == body  # the request, as a JSON string
    url = json.loads(done["data"]["resultJson"])["resultUrls"][0]
    assert image_size(http.get(url).content) == SIZES["1:1"]["1K"]
    ledger = sb.ledger()["by_provider"]["kie"]
    assert ledger["generate_requests"] == 1 and ledger["billed_images"] == 1 and ledger["billed_usd"] == "0.09"
    assert ledger["protocol"] == "kie" and ledger["requests"] == 1 + len(seen)


def test_upload_then_create_with_the_uploaded_reference(sb: SandboxServer, http: httpx.Client) -> None:
    uploaded = replay(http, sb, kie("file-base64-upload.request"))
    assert uploaded.status_code == 200
    matches(uploaded.json(), [kie("file-base64-upload.ok")])
    file_url = uploaded.json()["data"]["downloadUrl"]
    doc = kie("create-task-with-references.request")
    body = copy.deepcopy(doc.body)
    body["input"]["image_input"] = [file_url]
    created = replay(http, sb, doc, body=body)
    matches(created.json(), [kie("create-task.ok")])
    done = wait_record(http, sb, created.json()["data"]["taskId"])
    assert done["data"]["state"] == "success", done
    out = http.get(json.loads(done["data"]["resultJson"])["resultUrls"][0])
    assert out.headers["content-type"] == "image/jpeg" and image_size(out.content) == SIZES["4:5"]["2K"]


def test_a_reference_url_that_does_not_work_fails_the_task(sb: SandboxServer, http: httpx.Client) -> None:
    doc = kie("create-task-with-references.request")
    body = copy.deepcopy(doc.body)
    body["input"]["image_input"] = [f"{sb.url}/_sandbox/files/nothing-here.png"]
    done = wait_record(http, sb, replay(http, sb, doc, body=body).json()["data"]["taskId"])
    assert (done["data"]["state"], done["data"]["failCode"]) == ("fail", "422")
    matches(done, group("/api/v1/jobs/recordInfo", lambda c: c.body.get("data", {}).get("state") == "fail"))
    assert sb.ledger()["by_provider"]["kie"]["billed_images"] == 0


ERRORS = [("[sandbox:auth]", 401), ("[sandbox:no-credit]", 402), ("[sandbox:429]", 429),
          ("[sandbox:429-daily]", 433), ("[sandbox:500]", 500), ("[sandbox:503]", 455)]


@pytest.mark.parametrize(("account", "variant"), [("kie", "http-status"), ("kie-200", "http-200")])
@pytest.mark.parametrize(("trigger", "code"), ERRORS)
def test_error_triggers_answer_the_documented_envelopes(sb: SandboxServer, http: httpx.Client, account: str,
                                                        variant: str, trigger: str, code: int) -> None:
    doc = kie("create-task.request")
    body = copy.deepcopy(doc.body)
    body.pop("callBackUrl")
    body["input"]["prompt"] = f"mug {trigger}"
    got = replay(http, sb, doc, account=account, body=body)
    assert got.json()["code"] == code
    assert got.status_code == (code if variant == "http-status" else 200)
    documented = [c for c in group("/api/v1/jobs/createTask", lambda c: c.body.get("code") == code)
                  if code == 433 or c.path.stem.endswith(variant)]
    matches(got.json(), documented)
    assert sb.ledger()["by_provider"][account]["billed_images"] == 0


def test_validation_errors_are_422_envelopes(sb: SandboxServer, http: httpx.Client) -> None:
    doc = kie("create-task.request")
    for patch in ({"resolution": "8K"}, {"output_format": "jpeg"}, {"aspect_ratio": "7:3"},
                  {"image_input": ["not a url"]}, {"image_input": ["https://x.test/a.png"] * 9}, {"prompt": ""}):
        body = copy.deepcopy(doc.body)
        body.pop("callBackUrl")
        body["input"].update(patch)
        got = replay(http, sb, doc, body=body)
        assert (got.status_code, got.json()["code"]) == (422, 422), patch
        matches(got.json(), [kie("create-task.error-422.http-status")])
    wrong_model = replay(http, sb, doc, body={**doc.body, "model": "nano-banana"})
    assert wrong_model.json() == {"code": 422, "msg": "Page does not exist or is not published", "data": None}


def test_the_real_limit_answers_kies_429(sb: SandboxServer, http: httpx.Client) -> None:
    doc = kie("create-task.request")
    body = {**copy.deepcopy(doc.body), "callBackUrl": DEAD_CALLBACK}
    assert replay(http, sb, doc, account="kie-tight", body=body).status_code == 200
    limited = replay(http, sb, doc, account="kie-tight", body=body)
    assert limited.status_code == 429
    matches(limited.json(), [kie("create-task.error-429.http-status")])
    assert sb.ledger()["by_provider"]["kie-tight"]["by_status"] == {"200": 1, "429": 1}


def test_record_info_errors(sb: SandboxServer, http: httpx.Client) -> None:
    doc = kie("record-info.request")
    missing = http.get(f"{sb.url}/p/kie/api/v1/jobs/recordInfo", headers={"Authorization": "Bearer k"})
    assert missing.status_code == 400
    matches(missing.json(), [kie("record-info.error-400")])
    unknown = replay(http, sb, doc)  # the documented example id: no such task here
    assert unknown.status_code == 404
    matches(unknown.json(), [kie("record-info.error-404")])
    refused = replay(http, sb, doc, account="kie-keyed")
    assert refused.status_code == 401
    matches(refused.json(), [kie("record-info.error-401")])


@pytest.mark.parametrize(("trigger", "code", "msg"), [
    ("[sandbox:block-prompt]", "422", "Invalid prompt: prompt contains prohibited content"),
    ("[sandbox:block-image]", "422", "Generated image was blocked: content policy"),
    ("[sandbox:refuse]", "501", "Generation failed"),
])
def test_refusals_are_failed_tasks(sb: SandboxServer, http: httpx.Client, trigger: str, code: str,
                                   msg: str) -> None:
    doc = kie("create-task.request")
    body = copy.deepcopy(doc.body)
    body.pop("callBackUrl")
    body["input"]["prompt"] = f"mug {trigger}"
    done = wait_record(http, sb, replay(http, sb, doc, body=body).json()["data"]["taskId"])
    assert (done["data"]["state"], done["data"]["failCode"], done["data"]["failMsg"]) == ("fail", code, msg)
    assert done["data"]["resultJson"] == ""
    matches(done, group("/api/v1/jobs/recordInfo", lambda c: c.body.get("data", {}).get("state") == "fail"))
    assert sb.ledger()["by_provider"]["kie"]["billed_images"] == 0


def test_stream_upload_and_upload_errors(sb: SandboxServer, http: httpx.Client) -> None:
    doc = kie("file-stream-upload.request")
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(png, "PNG")
    got = http.post(f"{sb.url}/p/kie{doc.route}", headers={"Authorization": "Bearer k"},
                    data={"uploadPath": doc.body["uploadPath"], "fileName": doc.body["fileName"]},
                    files={"file": ("x.png", png.getvalue(), "image/png")})
    assert got.status_code == 200
    matches(got.json(), [kie("file-stream-upload.ok")])
    assert http.get(got.json()["data"]["downloadUrl"]).content == png.getvalue()
    b64 = kie("file-base64-upload.request")
    no_path = replay(http, sb, b64, body={"base64Data": b64.body["base64Data"]})
    assert no_path.status_code == 400
    matches(no_path.json(), [kie("file-upload.error-400")])
    assert no_path.json()["msg"] == "Missing required parameter: uploadPath"
    refused = replay(http, sb, b64, account="kie-keyed")
    assert refused.status_code == 401
    matches(refused.json(), [kie("file-upload.error-401")])


def test_a_name_that_speaks_another_protocol_is_not_found(sb: SandboxServer, http: httpx.Client) -> None:
    doc = kie("create-task.request")
    got = replay(http, sb, doc, account="gem", body={**doc.body, "callBackUrl": DEAD_CALLBACK})
    assert got.status_code == 404
    matches(got.json(), [kie("create-task.error-404.http-status")])
