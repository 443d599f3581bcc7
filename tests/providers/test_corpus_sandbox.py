"""The sandbox serves the corpus: every documented answer of Google, OpenAI and Replicate (AIML's and Kie's have
their own files: test_corpus_aimlapi, tests/sandbox/test_sandbox_kie) is what the sandbox answers when asked for
that outcome, with the documented HTTP status and shape. A capture missing from the table below fails the test, so
a new capture cannot go unserved."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.providers.corpus import Capture, captures, shape_problems

GEMINI_PATH = "/v1beta/models/gemini-3-pro-image-preview:generateContent"
#: response capture -> how to ask the sandbox for that outcome: (provider prefix, prompt trigger)
GOOGLE = {
    "generate-response-image": ("", ""),
    "generate-blocked-prompt": ("", "[sandbox:block-prompt]"),
    "generate-blocked-image": ("", "[sandbox:block-image]"),
    "generate-text-refusal": ("", "[sandbox:refuse]"),
    "error-400-key": ("", "[sandbox:auth]"),
    "error-429-quota": ("", "[sandbox:429-daily]"),
    "error-429-bare": ("", "[sandbox:shed]"),
    "error-503": ("", "[sandbox:503]"),
}
#: batch item captures -> the prompt trigger whose per-item error has that google.rpc code
GOOGLE_BATCH = {
    "batch-item-error-exhausted": "[sandbox:429]",
    "batch-item-error-internal": "[sandbox:500]",
    "batch-item-error-unavailable": "[sandbox:503]",
    "batch-item-error-unauthenticated": "[sandbox:auth]",
    "batch-item-error-invalid": "",  # an item the API refuses: imageSize "1k"
    "batch-item-error-deadline": "[sandbox:hang]",
}
#: documented batch item errors the sandbox has no trigger for (their adapter side: test_corpus_google)
GOOGLE_BATCH_UNSERVED = {"batch-item-error-denied"}
OPENAI = {
    "images-response-b64": "",
    "error-429-headers": "[sandbox:429]",
    "error-400": "[sandbox:block-prompt]",
}
REPLICATE = {
    "prediction-succeeded": ("replicate", ""),
    "prediction-failed": ("replicate", "[sandbox:block-prompt]"),
    "error-429": ("replicate", "[sandbox:429]"),
    "error-401": ("replicate-keyed", ""),
}


def by_name(provider: str, name: str) -> Capture:
    return next(c for c in captures(provider) if c.path.stem == name)


def served(resp: httpx.Response, capture: Capture) -> None:
    assert resp.status_code == capture.status, resp.text
    documented = capture.body_with(IMAGE_B64="aGk=", IMAGE_URL="https://x.test/i.png")
    assert shape_problems(resp.json(), documented, mixed_lists=True) == []


def test_every_response_capture_has_a_way_to_ask_the_sandbox_for_it() -> None:
    tables = {"google": {**GOOGLE, **GOOGLE_BATCH}, "openai": OPENAI, "replicate": REPLICATE}
    answers = {"replicate": {"prediction-starting", "files-create-response"},  # test_corpus_replicate serves these
               "google": GOOGLE_BATCH_UNSERVED}
    for provider, table in tables.items():
        documented = {c.path.stem for c in captures(provider, "response")}
        assert documented - answers.get(provider, set()) == set(table), provider


@pytest.mark.parametrize("name", sorted(GOOGLE))
def test_gemini_protocol_serves_the_documented_answer(sandbox: Any, name: str) -> None:
    capture = by_name("google", name)
    prefix, trigger = GOOGLE[name]
    body = by_name("google", "generate-request").body
    body = {**body, "contents": [{"parts": [{"text": f"a mug {trigger}"}]}]}
    served(httpx.post(f"{sandbox.url}{prefix}{GEMINI_PATH}", json=body, headers={"x-goog-api-key": "k"},
                      timeout=30), capture)


def test_gemini_batch_items_carry_the_documented_rpc_errors(sandbox: Any) -> None:
    base = f"{sandbox.url}/v1beta"
    inline = [{"request": {"contents": [{"parts": [{"text": f"a mug {trigger}"}]}]}, "metadata": {"key": name}}
              for name, trigger in GOOGLE_BATCH.items()]
    inline[list(GOOGLE_BATCH).index("batch-item-error-invalid")]["request"]["generationConfig"] = {
        "imageConfig": {"imageSize": "1k"}}
    create = {"batch": {"displayName": "corpus", "model": "models/gemini-3-pro-image-preview",
                        "inputConfig": {"requests": {"requests": inline}}}}
    with httpx.Client(headers={"x-goog-api-key": "k"}, timeout=30) as c:
        op = c.post(f"{base}/models/gemini-3-pro-image-preview:batchGenerateContent", json=create).json()
        deadline = time.monotonic() + 30
        while not op.get("done"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
            op = c.get(f"{base}/{op['name']}").json()
    items = op["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    by_key = {i["metadata"]["key"]: i for i in items}
    for name in GOOGLE_BATCH:
        documented = by_name("google", name).body
        assert shape_problems(by_key[name], documented) == [], name
        assert by_key[name]["error"]["code"] == documented["error"]["code"], name


@pytest.mark.parametrize("name", sorted(OPENAI))
def test_openai_protocol_serves_the_documented_answer(sandbox: Any, name: str) -> None:
    body = {**by_name("openai", "images-generate-request").body, "prompt": f"a mug {OPENAI[name]}"}
    served(httpx.post(f"{sandbox.url}/v1/images/generations", json=body, headers={"Authorization": "Bearer k"},
                      timeout=30), by_name("openai", name))


@pytest.mark.parametrize("name", sorted(REPLICATE))
def test_replicate_protocol_serves_the_documented_answer(sandbox: Any, name: str) -> None:
    account, trigger = REPLICATE[name]
    request = by_name("replicate", "prediction-create-request")
    body = {**request.body, "input": {**request.body["input"], "prompt": f"a mug {trigger}"}}
    resp = httpx.post(f"{sandbox.url}/p/{account}{request.route}", json=body,
                      headers={"Authorization": "Bearer k", "Prefer": "wait=30"}, timeout=30)
    capture = by_name("replicate", name)
    if capture.status == 200 and resp.status_code == 201:  # Prefer: wait answers the finished prediction as created
        resp = httpx.Response(200, json=resp.json())
    served(resp, capture)
