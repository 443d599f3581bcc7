"""generateContent over real HTTP: sizes, determinism, parsing, validation, auth, usage, prefixes."""

from __future__ import annotations

import base64

import httpx
import pytest

from pipeline.providers.base import SIZES
from tests.sandbox.sandbox_helpers import GENERATE, MODEL, final_image, gemini_body, image_size, png


@pytest.mark.parametrize("ratio", sorted(SIZES))
def test_every_ratio_at_1k_has_the_exact_size(sandbox, http, ratio):
    r = http.post(sandbox.url + GENERATE, json=gemini_body(f"a lamp {ratio}", ratio, "1K"))
    assert r.status_code == 200, r.text
    data, mime = final_image(r.json())
    assert mime == "image/png"
    assert image_size(data) == SIZES[ratio]["1K"]


@pytest.mark.parametrize(("ratio", "size"), [("16:9", "2K"), ("9:16", "4K"), ("21:9", "4K")])
def test_2k_and_4k_sizes(sandbox, http, ratio, size):
    r = http.post(sandbox.url + GENERATE, json=gemini_body("a big one", ratio, size))
    data, _ = final_image(r.json())
    assert image_size(data) == SIZES[ratio][size]
    details = r.json()["usageMetadata"]["candidatesTokensDetails"]
    assert details == [{"modality": "IMAGE", "tokenCount": 2000 if size == "4K" else 1120}]


def test_same_request_same_bytes_other_request_other_bytes(sandbox, http):
    body = gemini_body("a red bicycle")
    first, _ = final_image(http.post(sandbox.url + GENERATE, json=body).json())
    again, _ = final_image(http.post(sandbox.url + GENERATE, json=body).json())
    other, _ = final_image(http.post(sandbox.url + GENERATE, json=gemini_body("a blue bicycle")).json())
    assert first == again
    assert first != other


def test_response_shape_like_the_real_capture(sandbox, http):
    body = http.post(sandbox.url + GENERATE, json=gemini_body("shape")).json()
    cand = body["candidates"][0]
    assert cand["finishReason"] == "STOP" and cand["index"] == 0 and cand["content"]["role"] == "model"
    parts = cand["content"]["parts"]
    assert parts[0]["thought"] is True and "text" in parts[0]
    assert "thoughtSignature" in parts[-1] and "inlineData" in parts[-1]
    assert body["modelVersion"] == MODEL and body["responseId"]
    usage = body["usageMetadata"]
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    assert usage["candidatesTokenCount"] >= 1120
    assert usage["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": usage["promptTokenCount"]}]


def test_reference_images_cost_258_prompt_tokens_and_set_the_default_ratio(sandbox, http):
    refs = [png(300, 200), png(10, 10)]
    body = gemini_body("x" * 40, ratio=None, size="1K", refs=refs)
    r = http.post(sandbox.url + GENERATE, json=body).json()
    usage = r["usageMetadata"]
    assert usage["promptTokenCount"] == 10 + 2 * 258
    assert {"modality": "IMAGE", "tokenCount": 516} in usage["promptTokensDetails"]
    data, _ = final_image(r)
    assert image_size(data) == SIZES["3:2"]["1K"]  # matches the first input image


def test_text_and_image_modalities_add_a_text_part(sandbox, http):
    body = gemini_body("both")
    body["generationConfig"]["responseModalities"] = ["TEXT", "IMAGE"]
    parts = http.post(sandbox.url + GENERATE, json=body).json()["candidates"][0]["content"]["parts"]
    assert any("text" in p and not p.get("thought") for p in parts)
    assert "inlineData" in parts[-1]


def test_snake_case_body_and_v1_path_and_prefix(sandbox, http):
    body = {
        "contents": [
            {
                "parts": [
                    {"text": "snake"},
                    {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(png()).decode()}},
                ]
            }
        ],
        "generation_config": {
            "response_modalities": ["IMAGE"],
            "image_config": {"aspect_ratio": "4:5", "image_size": "1K"},
        },
    }
    for path in (f"/v1/models/{MODEL}:generateContent", f"/p/laozhang/v1beta/models/{MODEL}:generateContent"):
        r = http.post(sandbox.url + path, json=body)
        assert r.status_code == 200, r.text
        assert image_size(final_image(r.json())[0]) == SIZES["4:5"]["1K"]
    ledger = sandbox.ledger()
    assert ledger["by_provider"]["gemini"]["billed_images"] == 1
    assert ledger["by_provider"]["laozhang"]["billed_images"] == 1


def test_stream_generate_content_sends_one_sse_event(sandbox, http):
    r = http.post(
        sandbox.url + f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", json=gemini_body("sse")
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.startswith("data: {")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda b: b["generationConfig"]["imageConfig"].update(imageSize="1k"), "image_size"),
        (lambda b: b["generationConfig"]["imageConfig"].update(aspectRatio="7:3"), "aspect_ratio"),
        (lambda b: b["generationConfig"]["imageConfig"].update(outputMimeType="image/jpeg"), "Unknown name"),
        (lambda b: b.update(contents=[]), "contents"),
        (
            lambda b: b["contents"][0]["parts"].extend(
                [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png()).decode()}}] * 15
            ),
            "at most 14",
        ),
        (
            lambda b: b["contents"][0]["parts"].append(
                {"inlineData": {"mimeType": "image/png", "data": "%%%"}}
            ),
            "Base64",
        ),
    ],
)
def test_invalid_requests_get_google_400(sandbox, http, mutate, needle):
    body = gemini_body("invalid")
    mutate(body)
    r = http.post(sandbox.url + GENERATE, json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == 400 and err["status"] == "INVALID_ARGUMENT"
    assert needle in err["message"]
    assert sandbox.ledger()["billed_images"] == 0


def test_fourteen_references_are_accepted(sandbox, http):
    r = http.post(sandbox.url + GENERATE, json=gemini_body("many", refs=[png(8 + i, 8) for i in range(14)]))
    assert r.status_code == 200
    assert r.json()["usageMetadata"]["promptTokenCount"] == 1 + 14 * 258


def test_body_that_is_not_json(sandbox, http):
    r = http.post(sandbox.url + GENERATE, content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_any_key_or_none_by_default(sandbox, http):
    assert http.post(sandbox.url + GENERATE, json=gemini_body("nokey")).status_code == 200
    r = http.post(sandbox.url + GENERATE, json=gemini_body("key"), headers={"x-goog-api-key": "whatever"})
    assert r.status_code == 200


def test_api_keys_enforced_with_googles_bodies(make_sandbox):
    sb = make_sandbox({"protocols": {"gemini": {"api_keys": ["good"]}}})
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        bad = c.post(GENERATE, json=gemini_body("a"), headers={"x-goog-api-key": "bad"})
        assert bad.status_code == 400
        err = bad.json()["error"]
        assert err["status"] == "INVALID_ARGUMENT"
        assert err["details"][0]["reason"] == "API_KEY_INVALID"
        assert "bad" not in bad.text
        missing = c.post(GENERATE, json=gemini_body("a"))
        assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
        assert c.post(GENERATE, json=gemini_body("a"), headers={"x-goog-api-key": "good"}).status_code == 200
        assert (
            c.post(GENERATE, json=gemini_body("a"), headers={"authorization": "Bearer good"}).status_code
            == 200
        )
        assert c.post(GENERATE + "?key=good", json=gemini_body("a")).status_code == 200
    assert sb.ledger()["by_status"] == {"200": 3, "400": 1, "403": 1}


def test_model_info_and_unknown_paths(sandbox, http):
    r = http.get(sandbox.url + f"/v1beta/models/{MODEL}")
    assert r.status_code == 200 and "generateContent" in r.json()["supportedGenerationMethods"]
    assert http.post(sandbox.url + f"/v1beta/models/{MODEL}:frobnicate", json={}).status_code == 404
    assert http.post(sandbox.url + f"/v9/models/{MODEL}:generateContent", json={}).status_code == 404


def test_many_concurrent_requests_overlap(make_sandbox):
    sb = make_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.5, "max_s": 0.5}}}})
    import concurrent.futures
    import time

    def one(i: int) -> int:
        return httpx.post(sb.url + GENERATE, json=gemini_body(f"c{i}"), timeout=30).status_code

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(one, range(24)))
    elapsed = time.monotonic() - start
    assert codes == [200] * 24
    assert elapsed < 4.0  # 24 x 0.5 s sequential would be 12 s
    assert sb.ledger()["billed_images"] == 24
