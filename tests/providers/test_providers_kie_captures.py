"""The Kie.ai adapter against the capture corpus (tests/providers/captures/kie), both ways: every documented
answer reaches the outcome its capture expects, and what the adapter sends has the documented shape (paths,
field names, types, enums). The transport is httpx.MockTransport standing in for api.kie.ai."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import pytest
import yaml

from pipeline.errors import ProviderError
from pipeline.providers.base import ASPECT_RATIOS, CallHooks, ImageRequest, Reference
from pipeline.providers.kie_refs import BASE64_MAX_BYTES, KieUploads
from pipeline.providers.kie_wire import CREATE_PATH, RATE_WINDOW_S, RECORD_PATH, envelope_error, parse_record
from tests.providers.corpus import Capture, shape_problems
from tests.providers.kie_helpers import (
    IMAGE_URL,
    NOW,
    FakeTime,
    KieStub,
    body,
    capture,
    kie_captures,
    ok_created,
    provider,
    reply,
    succeeded,
)
from tests.providers.provider_wire import KEY, assert_no_key, image_bytes

REQ = ImageRequest("a mug on marble", "1K", "1:1")


def _responses(path: str) -> list[Capture]:
    return [c for c in kie_captures("response") if (c.route or "").split("?")[0] == path]


def _id(c: Capture) -> str:
    return c.path.stem


def _task_id(c: Capture) -> str:
    data = body(c).get("data") if isinstance(body(c), dict) else None
    return str(data.get("taskId")) if isinstance(data, dict) and data.get("taskId") else "task_x"


def _ref(data: bytes, mime: str = "image/png") -> Reference:
    return Reference(data=data, mime_type=mime, sha256=hashlib.sha256(data).hexdigest())


class FixedRefs:
    """A ReferenceHost that hands out one URL per reference, for request-shape tests."""

    def url_for(self, ref: Reference) -> str:
        return f"https://refs.test/{ref.sha256[:12]}.png"


class FakeInbox:
    def __init__(self, payload: Any = None) -> None:
        self.opened: list[str] = []
        self.bound: list[tuple[str, str]] = []
        self._payload = payload

    def open(self, provider: str) -> str:
        self.opened.append(provider)
        return "T" * 43

    def bind(self, token: str, remote_id: str) -> None:
        self.bound.append((token, remote_id))

    def payload(self, provider: str, remote_id: str) -> Any:
        return self._payload


# --- every documented answer to its outcome ----------------------------------------------------------------


@pytest.mark.parametrize("c", _responses(CREATE_PATH), ids=_id)
def test_every_create_answer_reaches_its_outcome(c: Capture) -> None:
    expect = c.expect
    stub = KieStub().on(CREATE_PATH, reply(c))
    saved: list[str] = []
    if expect["outcome"] == "pending":
        stub.on(RECORD_PATH, succeeded(_task_id(c)))
        result = provider(stub).generate(REQ, CallHooks(submitted=saved.append))
        assert result.remote_id == expect["remote_id"] == saved[0]
        assert (result.cost_usd, result.cost_source) == (Decimal("0.09"), "price_table")
        return
    with pytest.raises(ProviderError) as info:
        provider(stub).generate(REQ, CallHooks(submitted=saved.append))
    err = info.value
    assert err.error_class == expect["error_class"], (err, err.message)
    if "retry_after_s" in expect:
        assert err.retry_after_s == expect["retry_after_s"]
    assert not err.maybe_billed and saved == [] and not stub.sent(RECORD_PATH)
    assert body(c)["msg"][:20] in err.message
    assert_no_key(err)


@pytest.mark.parametrize("c", _responses(RECORD_PATH), ids=_id)
def test_every_record_answer_reaches_its_outcome(c: Capture) -> None:
    expect, task_id = c.expect, _task_id(c)
    stub = KieStub().on(CREATE_PATH, ok_created(task_id)).on(RECORD_PATH, reply(c), succeeded(task_id))
    clock = FakeTime()
    p = provider(stub, clock)
    if expect["outcome"] in ("image", "pending") or expect.get("error_class") == "rate_limited":
        result = p.generate(REQ)
        assert result.remote_id == task_id and result.data == stub.image
        assert [r.url.host for r in stub.requests].count("tempfile.test") == 1  # downloaded at once, once
        polls = len(stub.sent(RECORD_PATH))
        if expect["outcome"] == "image":
            assert polls == 1
            assert result.usage.get("costTime") == body(c)["data"].get("costTime")
        else:  # still running, or a 429 while polling: waited out, then the task's answer
            assert polls == 2
        if expect.get("error_class") == "rate_limited":
            assert RATE_WINDOW_S in clock.sleeps
            err = envelope_error(int(c.status or 0), body(c), provider="kie", headers={}, now=NOW)
            assert err is not None and err.error_class == "rate_limited"
        return
    with pytest.raises(ProviderError) as info:
        p.generate(REQ)
    err = info.value
    assert err.error_class == expect["error_class"], (err, err.message)
    if body(c).get("data", {}).get("failMsg"):
        assert body(c)["data"]["failMsg"][:30] in err.message  # the item fails with Kie's failMsg as its reason
    assert_no_key(err)


@pytest.mark.parametrize("c", [c for c in kie_captures("response") if "upload" in (c.route or "")], ids=_id)
def test_every_upload_answer_reaches_its_outcome(c: Capture) -> None:
    stub = KieStub().on("/api/file-base64-upload", reply(c)).on("/api/file-stream-upload", reply(c))
    uploads = KieUploads(stub.client(), "https://upload.test", KEY, provider="kie", clock=lambda: NOW)
    ref = _ref(image_bytes(16, 16))
    if c.expect["outcome"] == "pending":
        assert uploads.url_for(ref) == c.expect["file_url"]
        return
    with pytest.raises(ProviderError) as info:
        uploads.url_for(ref)
    assert info.value.error_class == c.expect["error_class"] and not info.value.maybe_billed
    assert_no_key(info.value)


def test_the_callback_body_finishes_the_task_without_polling() -> None:
    c = capture("callback.success")
    assert c.kind == "callback" and c.expect["outcome"] == "image"
    task_id = _task_id(c)
    stub = KieStub().on(CREATE_PATH, ok_created(task_id))
    inbox = FakeInbox(body(c))
    result = provider(stub, inbox=inbox).generate(REQ)
    assert result.remote_id == task_id and not stub.sent(RECORD_PATH)
    assert inbox.bound == [("T" * 43, task_id)]
    record = parse_record(body(c))
    assert record is not None and record.result_urls == (IMAGE_URL,)


def test_a_callback_for_another_task_is_ignored() -> None:
    stub = KieStub().on(CREATE_PATH, ok_created("task_mine")).on(RECORD_PATH, succeeded("task_mine"))
    forged = body(capture("callback.success"))  # names task_12345678
    result = provider(stub, inbox=FakeInbox(forged)).generate(REQ)
    assert result.remote_id == "task_mine" and len(stub.sent(RECORD_PATH)) == 1


# --- what we send has the documented shape ----------------------------------------------------------------


def _raw(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(capture(name).path.read_text())
    return data


def _enums_hold(sent: dict[str, Any], enums: dict[str, list[Any]]) -> None:
    for dotted, allowed in enums.items():
        value: Any = sent
        for part in dotted.split("."):
            value = value[part]
        assert value in allowed, (dotted, value)


def test_create_request_with_callback_has_the_documented_shape() -> None:
    doc = capture("create-task.request")
    stub = KieStub().on(CREATE_PATH, ok_created()).on(RECORD_PATH, succeeded())
    provider(stub, inbox=FakeInbox()).generate(REQ)
    (sent,) = stub.sent(CREATE_PATH)
    assert (sent.method, sent.url.path) == (doc.method, doc.route)
    assert sent.headers["authorization"] == f"Bearer {KEY}" and sent.headers["content-type"] == "application/json"
    payload = json.loads(sent.content)
    assert shape_problems(payload, doc.body) == []
    assert set(payload) == set(doc.body) and set(payload["input"]) == set(doc.body["input"])
    assert payload["callBackUrl"] == "https://hooks.test/pipeline/callbacks/kie/" + "T" * 43
    _enums_hold(payload, _raw("create-task.request")["enums"])


def test_create_request_with_references_has_the_documented_shape() -> None:
    doc = capture("create-task-with-references.request")
    stub = KieStub().on(CREATE_PATH, ok_created()).on(RECORD_PATH, succeeded())
    refs = (_ref(image_bytes(20, 25)), _ref(image_bytes(30, 30)))
    stub.image = image_bytes(1856, 2304)
    provider(stub, references=FixedRefs()).generate(ImageRequest("use the product", "2K", "4:5", "jpeg", refs))
    payload = stub.json_sent(CREATE_PATH)
    assert shape_problems(payload, doc.body) == [] and "callBackUrl" not in payload  # no public URL: no callback
    assert payload["input"]["image_input"] == [FixedRefs().url_for(r) for r in refs]
    assert payload["input"]["output_format"] == "jpg"  # Kie says jpg, not jpeg
    assert len(json.loads(stub.sent(CREATE_PATH)[0].content)["input"]["prompt"]) <= _raw(
        "create-task.request")["limits"]["input.prompt.maxLength"]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("resolution", ["1K", "2K", "4K"])
def test_every_ratio_resolution_and_format_we_send_is_in_the_documented_enums(resolution: str, fmt: str) -> None:
    enums = _raw("create-task.request")["enums"]
    stub = KieStub().on(CREATE_PATH, reply(capture("create-task.error-422.http-status")))
    p = provider(stub)
    for i, ratio in enumerate(ASPECT_RATIOS):
        with pytest.raises(ProviderError):
            p.generate(ImageRequest("x", resolution, ratio, fmt))
        _enums_hold(stub.json_sent(CREATE_PATH, i), enums)


def test_record_request_has_the_documented_shape() -> None:
    doc = capture("record-info.request")
    stub = KieStub().on(CREATE_PATH, ok_created("task_12345678")).on(RECORD_PATH, succeeded("task_12345678"))
    provider(stub).generate(REQ)
    (sent,) = stub.sent(RECORD_PATH)
    path, _, query = str(doc.route).partition("?")
    assert (sent.method, sent.url.path) == (doc.method, path)
    assert dict(sent.url.params) == dict(q.split("=") for q in query.split("&"))
    assert sent.headers["authorization"] == f"Bearer {KEY}"


def test_base64_upload_request_has_the_documented_shape() -> None:
    doc = capture("file-base64-upload.request")
    stub = KieStub().on(str(doc.route), reply(capture("file-base64-upload.ok")))
    ref = _ref(image_bytes(16, 16))
    KieUploads(stub.client(), "https://upload.test", KEY, provider="kie").url_for(ref)
    (sent,) = stub.requests
    assert (sent.method, sent.url.path) == (doc.method, doc.route)
    payload = json.loads(sent.content)
    assert shape_problems(payload, doc.body) == [] and set(payload) == set(doc.body)
    assert payload["base64Data"].startswith("data:image/png;base64,")
    assert payload["uploadPath"].strip("/") == payload["uploadPath"]  # "without leading or trailing slashes"
    assert payload["fileName"] == f"{ref.sha256}.png"  # content-addressed: an overwrite is the same file
    assert sent.headers["authorization"] == f"Bearer {KEY}"


def test_large_references_use_the_stream_upload_with_the_documented_fields() -> None:
    doc = capture("file-stream-upload.request")
    stub = KieStub().on(str(doc.route), reply(capture("file-stream-upload.ok")))
    ref = _ref(b"\x89PNG" + b"\0" * (BASE64_MAX_BYTES + 1))
    uploads = KieUploads(stub.client(), "https://upload.test", KEY, provider="kie")
    assert uploads.url_for(ref) == capture("file-stream-upload.ok").expect["file_url"]
    assert uploads.url_for(ref) == capture("file-stream-upload.ok").expect["file_url"]  # reused, not sent again
    (sent,) = stub.requests
    assert (sent.method, sent.url.path) == (doc.method, doc.route)
    assert sent.headers["content-type"].startswith("multipart/form-data")
    for name in doc.body:
        assert f'name="{name}"'.encode() in sent.content
