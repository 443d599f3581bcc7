"""Replicate's documented shapes, both ways, and its files API: references over 256 KB are uploaded
(`POST /v1/files`) and passed by their `urls.get`, smaller ones inline as data URLs."""

from __future__ import annotations

import io
import json
import os
from decimal import Decimal
from typing import Any

import httpx
import pytest
from PIL import Image

from pipeline.errors import ProviderError
from pipeline.providers.base import CallHooks, ImageRequest, Reference
from pipeline.providers.replicate import DATA_URL_MAX_BYTES, ReplicateProvider
from tests.providers.corpus import Capture, captures, shape_problems
from tests.providers.provider_wire import KEY, Recorder, assert_no_key, config, image_bytes, sized

OUT = "https://replicate.delivery/xezq/out.png"
REQ = ImageRequest(prompt="a mug", resolution="1K", aspect_ratio="1:1")
SMALL = Reference(data=image_bytes(8, 8), mime_type="image/png", sha256="small")


def noise_png(side: int = 400) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, format="PNG")
    return buf.getvalue()


BIG_DATA = noise_png()
BIG = Reference(data=BIG_DATA, mime_type="image/png", sha256="big")


def by_name(name: str) -> Capture:
    return next(c for c in captures("replicate") if c.path.stem == name)


def provider(rec: Recorder) -> ReplicateProvider:
    return ReplicateProvider(config("replicate"), KEY, rec.client(), sleep=lambda s: None, poll_interval_s=0.01)


def serving(create: Capture, poll: Capture | None = None) -> Recorder:
    png = sized("1:1", "1K")

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == OUT:
            return httpx.Response(200, content=png, headers={"content-type": "image/png"})
        if request.url.path == "/v1/files":
            upload = by_name("files-create-response")
            return httpx.Response(upload.status or 201, json=upload.body)
        capture = create if request.method == "POST" else (poll or create)
        return httpx.Response(capture.status or 200, json=capture.body_with(IMAGE_URL=OUT))

    return Recorder([handler])


def test_succeeded_prediction_is_an_image_priced_from_the_table() -> None:
    result = provider(serving(by_name("prediction-succeeded"))).generate(REQ, CallHooks())
    assert result.data == sized("1:1", "1K") and result.cost_source == "price_table"
    assert result.cost_usd == Decimal("0.036") and result.remote_id == "gm3qorzdhgbfurvjtvhg6dckhu"


def test_starting_prediction_is_saved_then_polled() -> None:
    saved: list[str] = []
    rec = serving(by_name("prediction-starting"), by_name("prediction-succeeded"))
    provider(rec).generate(REQ, CallHooks(submitted=saved.append))
    assert saved == ["heat2o3bzn3ahtr6bjfftvbaci"]
    assert [r.method for r in rec.requests[:2]] == ["POST", "GET"]  # pending: polled, never created again


@pytest.mark.parametrize("name", ["prediction-failed", "error-401", "error-429"])
def test_documented_errors(name: str) -> None:
    capture = by_name(name)
    with pytest.raises(ProviderError) as info:
        provider(serving(capture)).generate(REQ, CallHooks())
    err = info.value
    assert_no_key(err)
    assert err.error_class == capture.expect["error_class"]
    if "retry_after_s" in capture.expect:
        assert err.retry_after_s == pytest.approx(capture.expect["retry_after_s"])


def test_request_shape_and_large_references_go_through_the_files_api() -> None:
    assert len(BIG_DATA) > DATA_URL_MAX_BYTES >= len(SMALL.data)
    rec = serving(by_name("prediction-succeeded"))
    provider(rec).generate(ImageRequest("a mug", "1K", "1:1", references=(SMALL, BIG)), CallHooks())
    upload, create = rec.requests[0], rec.requests[1]
    documented_upload = by_name("files-create-request")
    assert (upload.method, upload.url.path) == (documented_upload.method, documented_upload.route)
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert b'name="content"; filename="reference-big.png"' in upload.content and BIG_DATA in upload.content
    assert upload.headers["authorization"] == f"Bearer {KEY}"
    documented = by_name("prediction-create-request")
    assert (create.method, create.url.path) == (documented.method, documented.route)
    assert create.headers["prefer"].startswith("wait=")
    body = json.loads(create.content)
    assert shape_problems(body, documented.body, nullable=False) == []
    assert set(body["input"]) <= set(documented.body["input"]) | {"safety_filter_level"}
    small_url, big_url = body["input"]["image_input"]
    assert small_url.startswith("data:image/png;base64,")
    assert big_url == by_name("files-create-response").body["urls"]["get"]


def test_failed_upload_is_not_billed_and_creates_nothing() -> None:
    rec = Recorder([httpx.Response(401, json=by_name("error-401").body)])
    with pytest.raises(ProviderError) as info:
        provider(rec).generate(ImageRequest("a mug", "1K", "1:1", references=(BIG,)), CallHooks())
    assert info.value.error_class == "auth" and not info.value.maybe_billed
    assert [r.url.path for r in rec.requests] == ["/v1/files"]


# --- the sandbox answers with the documented shapes -------------------------------------------------------------


def test_sandbox_prediction_and_file_shapes(sandbox: Any) -> None:
    headers = {"Authorization": "Bearer k"}
    with httpx.Client(base_url=sandbox.url, headers=headers, timeout=30) as c:
        created = c.post(by_name("prediction-create-request").route, json=by_name("prediction-create-request").body,
                         headers={"Prefer": "wait=30"})
        assert created.status_code == 201
        assert shape_problems(created.json(), by_name("prediction-starting").body) == []
        assert shape_problems(created.json(), by_name("prediction-succeeded").body) == []
        uploaded = c.post("/v1/files", files={"content": ("ref.png", BIG_DATA, "image/png")})
        assert uploaded.status_code == 201
        assert shape_problems(uploaded.json(), by_name("files-create-response").body) == []
        file_url = uploaded.json()["urls"]["get"]
        assert c.get(file_url).json()["checksums"]["sha256"] == uploaded.json()["checksums"]["sha256"]
        assert [f["id"] for f in c.get("/v1/files").json()["results"]] == [uploaded.json()["id"]]
        assert c.delete(file_url).status_code == 204 and c.get(file_url).status_code == 404


def test_adapter_uploads_to_the_sandbox_and_the_prediction_sees_the_image(sandbox: Any) -> None:
    with httpx.Client() as http:
        p = ReplicateProvider(config("replicate", base_url=sandbox.url), KEY, http)
        by_upload = p.generate(ImageRequest("a mug", "1K", "1:1", references=(BIG,)), CallHooks())
    account = sandbox.ledger()["by_provider"]["replicate"]
    assert account["by_status"]["201"] == 2  # the upload and the prediction
    assert account["billed_images"] == 1 and Decimal(account["billed_usd"]) == by_upload.cost_usd
