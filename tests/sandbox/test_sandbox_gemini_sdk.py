"""Conformance: the official google-genai SDK pointed at the sandbox."""

from __future__ import annotations

import io

import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from pipeline.providers.base import SIZES
from tests.sandbox.sandbox_helpers import MODEL, png


def client_for(url: str, key: str = "x") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=url))


def config(ratio: str = "16:9", size: str = "2K") -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio=ratio, image_size=size)
    )


def final_part(response: types.GenerateContentResponse) -> types.Part:
    parts = [p for p in response.candidates[0].content.parts if p.inline_data is not None and not p.thought]
    return parts[-1]


def test_sdk_gets_an_image_of_the_right_size(sandbox):
    client = client_for(sandbox.url)
    response = client.models.generate_content(
        model=MODEL, contents="A ceramic mug, logo 'ACME'", config=config()
    )
    part = final_part(response)
    assert part.inline_data.mime_type == "image/png"
    with Image.open(io.BytesIO(part.inline_data.data)) as img:
        assert img.size == SIZES["16:9"]["2K"]
    usage = response.usage_metadata
    assert usage.candidates_tokens_details[0].token_count == 1120
    assert usage.thoughts_token_count > 0
    assert response.candidates[0].content.parts[0].thought is True
    assert sandbox.ledger()["billed_images"] == 1


def test_sdk_with_reference_images_and_prefix(sandbox):
    client = client_for(sandbox.url + "/p/google")
    ref = types.Part.from_bytes(data=png(120, 90), mime_type="image/png")
    response = client.models.generate_content(
        model=MODEL, contents=["make it blue", ref], config=config("4:3", "1K")
    )
    with Image.open(io.BytesIO(final_part(response).inline_data.data)) as img:
        assert img.size == SIZES["4:3"]["1K"]
    assert response.usage_metadata.prompt_token_count == 3 + 258
    assert sandbox.ledger()["by_provider"]["google"]["billed_images"] == 1


def test_sdk_stream(sandbox):
    client = client_for(sandbox.url)
    chunks = list(
        client.models.generate_content_stream(model=MODEL, contents="stream me", config=config("1:1", "1K"))
    )
    assert len(chunks) == 1
    assert final_part(chunks[0]).inline_data.data[:4] == b"\x89PNG"


def test_sdk_sees_blocks_as_responses(sandbox):
    client = client_for(sandbox.url)
    blocked = client.models.generate_content(model=MODEL, contents="[sandbox:block-prompt]", config=config())
    assert blocked.candidates is None
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    filtered = client.models.generate_content(model=MODEL, contents="[sandbox:block-image]", config=config())
    assert filtered.candidates[0].finish_reason == types.FinishReason.IMAGE_SAFETY
    refused = client.models.generate_content(model=MODEL, contents="[sandbox:refuse]", config=config())
    assert refused.candidates[0].finish_reason == types.FinishReason.STOP
    assert all(p.inline_data is None for p in refused.candidates[0].content.parts)
    assert sandbox.ledger()["billed_images"] == 0


@pytest.mark.parametrize(
    ("trigger", "error_type", "code", "status"),
    [
        ("[sandbox:429]", errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        ("[sandbox:500]", errors.ServerError, 500, "INTERNAL"),
        ("[sandbox:503]", errors.ServerError, 503, "UNAVAILABLE"),
        ("[sandbox:auth]", errors.ClientError, 400, "INVALID_ARGUMENT"),
    ],
)
def test_sdk_raises_its_errors(sandbox, trigger, error_type, code, status):
    client = client_for(sandbox.url)
    with pytest.raises(error_type) as info:
        client.models.generate_content(model=MODEL, contents=trigger, config=config())
    assert info.value.code == code
    assert info.value.status == status


def test_sdk_rejects_lowercase_size_server_side(sandbox):
    client = client_for(sandbox.url)
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents="x", config=config("1:1", "1k"))
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"


def test_sdk_flex_service_tier(sandbox, make_sandbox):
    """google-genai's `service_tier` (sent as the top-level `serviceTier`) is accepted and billed at half the
    standard rates; a model without Flex refuses it with a 400 the SDK raises as a ClientError."""
    client = client_for(sandbox.url)
    flex_config = types.GenerateContentConfig(
        response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio="1:1", image_size="1K"),
        service_tier="flex",
    )
    client.models.generate_content(model=MODEL, contents="flex mug", config=flex_config)
    flex_usd = float(sandbox.ledger()["billed_usd"])
    sandbox.reset()
    client.models.generate_content(model=MODEL, contents="flex mug", config=config("1:1", "1K"))
    assert flex_usd == pytest.approx(float(sandbox.ledger()["billed_usd"]) / 2, rel=0.01)
    noflex = make_sandbox({"protocols": {"gemini": {"flex": False}}})
    refusing = client_for(noflex.url)
    with pytest.raises(errors.ClientError) as info:
        refusing.models.generate_content(model=MODEL, contents="flex mug", config=flex_config)
    assert info.value.code == 400 and "Service tier" in str(info.value)
