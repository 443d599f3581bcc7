"""Replicate predictions: over HTTP and with the official replicate client."""

from __future__ import annotations

import base64
import hashlib
import io
import time

import httpx
import pytest
import replicate

from pipeline.providers.base import SIZES
from tests.sandbox.sandbox_helpers import image_size, png

CREATE = "/v1/models/google/nano-banana-pro/predictions"


def poll(c: httpx.Client, url: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        p = c.get(url).json()
        if p["status"] in ("succeeded", "failed", "canceled"):
            return p
        time.sleep(0.05)
    raise AssertionError("prediction did not finish")


def test_prefer_wait_returns_the_output(sandbox, http):
    r = http.post(
        sandbox.url + CREATE,
        json={
            "input": {"prompt": "a dog", "aspect_ratio": "4:3", "resolution": "1K", "output_format": "png"}
        },
        headers={"Prefer": "wait"},
    )
    assert r.status_code == 201
    p = r.json()
    assert p["status"] == "succeeded" and p["model"] == "google/nano-banana-pro"
    assert isinstance(p["output"], str) and p["error"] is None
    assert p["metrics"]["predict_time"] >= 0 and p["completed_at"] and p["started_at"]
    assert p["urls"]["get"] == f"{sandbox.url}/v1/predictions/{p['id']}"
    got = http.get(p["output"])
    assert got.headers["content-type"] == "image/png"
    assert image_size(got.content) == SIZES["4:3"]["1K"]


def test_without_wait_then_poll(make_sandbox):
    sb = make_sandbox({"protocols": {"replicate": {"latency": {"min_s": 0.3, "max_s": 0.3}}}})
    with httpx.Client(timeout=30) as c:
        p = c.post(sb.url + CREATE, json={"input": {"prompt": "later", "resolution": "1K"}}).json()
        assert p["status"] == "starting" and p["output"] is None
        short = c.post(sb.url + CREATE, json={"input": {"prompt": "short"}}, headers={"Prefer": "wait=1"})
        assert short.json()["status"] == "succeeded"
        done = poll(c, p["urls"]["get"])
        assert done["status"] == "succeeded"
        assert image_size(c.get(done["output"]).content) == SIZES["1:1"]["1K"]  # default jpg output
    ledger = sb.ledger()
    assert ledger["billed_images"] == 2 and ledger["by_status"]["201"] == 2


def test_cancel(make_sandbox):
    sb = make_sandbox({"protocols": {"replicate": {"latency": {"min_s": 2, "max_s": 2}}}})
    with httpx.Client(timeout=30) as c:
        p = c.post(sb.url + CREATE, json={"input": {"prompt": "cancel me"}}).json()
        cancelled = c.post(p["urls"]["cancel"]).json()
        assert cancelled["status"] == "canceled"
        assert c.get(p["urls"]["get"]).json()["status"] == "canceled"
        auto = c.post(
            sb.url + CREATE, json={"input": {"prompt": "auto"}}, headers={"Cancel-After": "0.2s"}
        ).json()
        assert poll(c, auto["urls"]["get"])["status"] == "canceled"
    assert sb.ledger()["billed_images"] == 0


def test_data_uri_inputs_match_ratio(sandbox, http):
    uri = "data:image/png;base64," + base64.b64encode(png(160, 90)).decode()
    p = http.post(
        sandbox.url + CREATE,
        json={
            "input": {
                "prompt": "match",
                "image_input": [uri, "https://example.com/a.png"],
                "resolution": "1K",
            }
        },
        headers={"Prefer": "wait=5"},
    ).json()
    assert image_size(http.get(p["output"]).content) == SIZES["16:9"]["1K"]


@pytest.mark.parametrize(
    "inp",
    [
        {},
        {"prompt": "x", "aspect_ratio": "7:3"},
        {"prompt": "x", "resolution": "1k"},
        {"prompt": "x", "output_format": "webp"},
        {"prompt": "x", "image_input": ["not a uri"]},
        {"prompt": "x", "image_input": ["https://x/a.png"] * 15},
    ],
)
def test_invalid_input_is_422(sandbox, http, inp):
    r = http.post(sandbox.url + CREATE, json={"input": inp})
    assert r.status_code == 422
    assert r.json()["title"] == "Input validation failed"


def test_throttle_429_problem(make_sandbox):
    sb = make_sandbox({"protocols": {"replicate": {"rpm": 60, "bucket_s": 1.0}}})
    with httpx.Client(timeout=30) as c:
        assert c.post(sb.url + CREATE, json={"input": {"prompt": "a"}}).status_code == 201
        r = c.post(sb.url + CREATE, json={"input": {"prompt": "b"}})
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["retry_after"] == 1 and r.headers["retry-after"] == "1"
    assert r.json()["status"] == 429 and "throttled" in r.json()["detail"]


@pytest.mark.parametrize(
    ("trigger", "status"),
    [("[sandbox:500]", 500), ("[sandbox:503]", 503), ("[sandbox:no-credit]", 402), ("[sandbox:auth]", 401)],
)
def test_error_triggers(sandbox, http, trigger, status):
    r = http.post(sandbox.url + CREATE, json={"input": {"prompt": trigger}})
    assert r.status_code == status and r.json()["status"] == status


def test_blocked_and_bad_outputs(sandbox, http):
    def run(prompt: str) -> dict:
        return http.post(
            sandbox.url + CREATE, json={"input": {"prompt": prompt}}, headers={"Prefer": "wait"}
        ).json()

    blocked = run("[sandbox:block-prompt]")
    assert blocked["status"] == "failed" and "E005" in blocked["error"]
    assert run("[sandbox:refuse]")["status"] == "failed"
    wrong = run("[sandbox:wrong-size]")
    assert image_size(http.get(wrong["output"]).content) != SIZES["1:1"]["2K"]
    cut = run("[sandbox:truncated]")
    with pytest.raises(OSError):
        image_size(http.get(cut["output"]).content)
    assert sandbox.ledger()["billed_images"] == 2


def test_replicate_client(sandbox):
    client = replicate.Client(api_token="r8_x", base_url=sandbox.url)
    pred = client.models.predictions.create(
        model="google/nano-banana-pro",
        input={"prompt": "sdk", "resolution": "1K", "aspect_ratio": "9:16"},
        wait=True,
    )
    assert pred.status == "succeeded"
    assert image_size(httpx.get(pred.output).content) == SIZES["9:16"]["1K"]
    later = client.predictions.create(
        model="google/nano-banana-pro", input={"prompt": "poll", "resolution": "1K"}
    )
    later.wait()
    assert later.status == "succeeded" and later.output
    # replicate.run hands back http:// outputs as plain strings (FileOutput is for https:// and data: only)
    out = client.run("google/nano-banana-pro", input={"prompt": "run", "resolution": "1K"})
    assert isinstance(out, str) and httpx.get(out).status_code == 200
    blocked = client.predictions.create(
        model="google/nano-banana-pro", input={"prompt": "[sandbox:block-image]"}
    )
    blocked.wait()
    assert blocked.status == "failed"


def test_api_keys(make_sandbox):
    sb = make_sandbox({"protocols": {"replicate": {"api_keys": ["r8_good"]}}})
    with httpx.Client(timeout=30) as c:
        bad = c.post(
            sb.url + CREATE, json={"input": {"prompt": "x"}}, headers={"Authorization": "Bearer r8_bad"}
        )
        assert bad.status_code == 401 and bad.json()["title"] == "Unauthenticated"
        ok = c.post(
            sb.url + CREATE, json={"input": {"prompt": "x"}}, headers={"Authorization": "Bearer r8_good"}
        )
        assert ok.status_code == 201
        assert c.get(ok.json()["urls"]["get"]).status_code == 401  # polls need the key too


def test_replicate_client_files_api(sandbox):
    """The official client's files API against the sandbox: upload, get, list, use as an input URL, delete."""
    client = replicate.Client(api_token="r8_x", base_url=sandbox.url)
    data = png(8, 6)
    f = client.files.create(io.BytesIO(data), filename="ref.png", content_type="image/png", metadata={"k": "v"})
    assert f.size == len(data) and f.content_type == "image/png" and f.metadata == {"k": "v"}
    assert f.checksums["sha256"] == hashlib.sha256(data).hexdigest()
    assert client.files.get(f.id).id == f.id and [x.id for x in client.files.list()] == [f.id]
    pred = client.models.predictions.create(
        model="google/nano-banana-pro", input={"prompt": "from a file", "resolution": "1K",
                                                "image_input": [f.urls["get"]]}, wait=True)
    assert pred.status == "succeeded"  # the input URL resolved to the uploaded image: its ratio is matched
    assert image_size(httpx.get(pred.output).content) == SIZES["4:3"]["1K"]
    assert client.files.delete(f.id) is True
