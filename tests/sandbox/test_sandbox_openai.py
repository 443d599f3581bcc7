"""OpenAI Images API: over HTTP and with the official openai SDK (base_url=f"{url}/v1")."""

from __future__ import annotations

import base64
import io
from decimal import Decimal

import httpx
import openai
import pytest
from PIL import Image

from pipeline.providers.base import SIZES
from tests.sandbox.sandbox_helpers import image_size, png

GEN = "/v1/images/generations"


def sdk(url: str, key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)


def decode(b64: str) -> tuple[int, int]:
    return image_size(base64.b64decode(b64))


def test_sdk_generate_with_size(sandbox):
    r = sdk(sandbox.url).images.generate(model="gemini-3-pro-image-preview", prompt="a cat", size="1536x1024")
    assert decode(r.data[0].b64_json) == SIZES["3:2"]["1K"]
    assert r.size == "1264x848" and r.output_format == "png"
    assert r.usage.output_tokens_details.image_tokens == 1120
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_sdk_generate_with_reseller_fields_and_url_mode(sandbox):
    r = sdk(sandbox.url).images.generate(
        model="x",
        prompt="wide",
        response_format="url",
        extra_body={"aspect_ratio": "21:9", "resolution": "2K"},
    )
    url = r.data[0].url
    assert url.startswith(sandbox.url + "/_sandbox/files/")
    assert image_size(httpx.get(url).content) == SIZES["21:9"]["2K"]
    assert sandbox.ledger()["requests"] == 1  # the download is not an API request


def test_sdk_edit_with_image_array_and_single_image(sandbox):
    client = sdk(sandbox.url)
    many = client.images.edit(
        model="x",
        prompt="combine",
        image=[("a.png", png(90, 160), "image/png"), ("b.png", png(), "image/png")],
    )
    assert decode(many.data[0].b64_json) == SIZES["9:16"]["1K"]  # the first image's ratio
    assert many.usage.input_tokens_details.image_tokens == 2 * 258
    one = client.images.edit(model="x", prompt="one", image=("a.png", png(), "image/png"), size="2048x2048")
    assert decode(one.data[0].b64_json) == SIZES["1:1"]["2K"]


def test_n_images_and_jpeg(sandbox, http):
    r = http.post(
        sandbox.url + GEN, json={"prompt": "three", "n": 3, "output_format": "jpeg", "image_size": "1K"}
    )
    data = r.json()["data"]
    assert len(data) == 3 and len({d["b64_json"] for d in data}) == 3
    with Image.open(io.BytesIO(base64.b64decode(data[0]["b64_json"]))) as img:
        assert img.format == "JPEG"
    assert sandbox.ledger()["billed_images"] == 3


def test_json_edit_with_data_uri(sandbox, http):
    uri = "data:image/png;base64," + base64.b64encode(png(100, 80)).decode()
    r = http.post(
        sandbox.url + "/v1/images/edits", json={"prompt": "json edit", "image": [uri, "https://x/y.png"]}
    )
    assert r.status_code == 200
    assert decode(r.json()["data"][0]["b64_json"]) == SIZES["5:4"]["1K"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 1}, "prompt"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": "x", "aspect_ratio": "7:3"}, "aspect_ratio"),
        ({"prompt": "x", "resolution": "8K"}, "resolution"),
        ({"prompt": "x", "output_format": "gif"}, "output_format"),
    ],
)
def test_invalid_requests(sandbox, http, body, param):
    r = http.post(sandbox.url + GEN, json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param


def test_rate_limit_headers_and_body(make_sandbox):
    sb = make_sandbox({"protocols": {"openai": {"rpm": 60, "bucket_s": 1.0}}})
    with httpx.Client(base_url=sb.url, timeout=30) as c:
        assert c.post(GEN, json={"prompt": "a"}).status_code == 200
        r = c.post(GEN, json={"prompt": "b"})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert 0 < int(r.headers["retry-after-ms"]) <= 1000
    assert r.headers["retry-after"] == "1"
    assert r.headers["x-ratelimit-limit-requests"] == "60"


def test_sdk_error_classes(sandbox):
    client = sdk(sandbox.url)
    with pytest.raises(openai.RateLimitError) as limited:
        client.images.generate(prompt="[sandbox:429]", model="x")
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after-ms"] == "1500"
    with pytest.raises(openai.RateLimitError) as broke:
        client.images.generate(prompt="[sandbox:no-credit]", model="x")
    assert broke.value.code == "insufficient_quota"
    with pytest.raises(openai.BadRequestError) as blocked:
        client.images.generate(prompt="[sandbox:block-prompt]", model="x")
    assert blocked.value.code == "moderation_blocked"
    assert blocked.value.body["moderation_details"]["moderation_stage"] == "input"
    with pytest.raises(openai.BadRequestError) as filtered:
        client.images.generate(prompt="[sandbox:block-image]", model="x")
    assert filtered.value.body["moderation_details"]["moderation_stage"] == "output"
    with pytest.raises(openai.InternalServerError):
        client.images.generate(prompt="[sandbox:503]", model="x")
    with pytest.raises(openai.AuthenticationError) as auth:
        client.images.generate(prompt="[sandbox:auth]", model="x")
    assert auth.value.code == "invalid_api_key"
    assert client.images.generate(prompt="[sandbox:refuse]", model="x").data == []
    assert sandbox.ledger()["billed_images"] == 0


def test_api_keys(make_sandbox):
    sb = make_sandbox({"protocols": {"openai": {"api_keys": ["sk-good"]}}})
    with pytest.raises(openai.AuthenticationError):
        sdk(sb.url, "sk-bad").images.generate(prompt="x", model="x")
    assert sdk(sb.url, "sk-good").images.generate(prompt="x", model="x").data


def test_truncated_and_malformed(sandbox, http):
    r = http.post(sandbox.url + GEN, json={"prompt": "[sandbox:truncated]"}).json()
    with pytest.raises(Exception):  # noqa: B017 - any decode failure
        decode(r["data"][0]["b64_json"])
    bad = http.post(sandbox.url + GEN, json={"prompt": "[sandbox:malformed]"})
    with pytest.raises(ValueError):
        bad.json()


def test_flat_price_for_a_reseller_prefix(make_sandbox):
    sb = make_sandbox(
        {"providers": {"kie": {"protocol": "openai", "price_per_image": {"1K": "0.09", "4K": "0.12"}}}}
    )
    client = sdk(sb.url + "/p/kie")
    client.images.generate(prompt="a", model="x", extra_body={"resolution": "1K"})
    client.images.generate(prompt="b", model="x", extra_body={"resolution": "4K"})
    kie = sb.ledger()["by_provider"]["kie"]
    assert kie["protocol"] == "openai" and Decimal(kie["billed_usd"]) == Decimal("0.21")
