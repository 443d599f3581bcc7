"""Dialects of the images API family: what an `openai-images` preset sends, as data (no branches in code).

OpenAI's own API (the default dialect) takes `size: "WxH"`, `n`, `response_format`, `output_format`, and edits
as multipart to /v1/images/edits with one `image[]` part per reference (openai/openai-python
types/image_generate_params.py, image_edit_params.py, resources/images.py). A reseller's documented dialect
renames or drops fields; its preset says how under `images:`. AIML API, for example (docs.aimlapi.com,
aimlapi/api-docs: image-models/Google/gemini-3-pro-image-preview*.json): JSON to /v1/images/generations for
both cases, `aspect_ratio`, `resolution`, `num_images`, edits with model `google/nano-banana-pro-edit` and
references as `image_urls` (URLs or base64 data URLs).

Part of a provider's config (ProviderConfig.images), so it lives beside pipeline.config, not in providers/:
config must not depend on the adapters, which depend on config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: the largest output OpenAI's size field accepts (gpt-image-2: "the maximum supported resolution is
#: 3840x2160", sides divisible by 16, ratio within 1:3..3:1; openai-python types/image_generate_params.py)
OPENAI_MAX_SIZE = (3840, 2160)


class ImagesDialect(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: path of text-to-image calls, under the base URL's /v1
    generations_path: str = "/images/generations"
    #: path of calls with references; None sends them to generations_path too (as JSON)
    edits_path: str | None = "/images/edits"
    #: "multipart": references as files (OpenAI); "json": references as data URLs or URLs in a JSON list
    edits_encoding: Literal["multipart", "json"] = "multipart"
    #: the model for calls with references (None: the preset's model)
    edit_model: str | None = None
    #: the multipart field (one part per reference) or the JSON list field of references
    reference_field: str = "image[]"
    #: most references one call takes (AIML's schema: 14 for nano-banana-pro-edit)
    max_references: int = Field(default=16, gt=0)
    #: largest reference sent inline as a data URL (JSON dialects); larger ones need a URL the provider
    #: can fetch, refused at validate time until the storage can presign one
    max_inline_reference_bytes: int | None = None
    #: field names; None leaves the field out
    size_field: str | None = "size"
    aspect_ratio_field: str | None = None
    resolution_field: str | None = None
    count_field: str = "n"
    response_format_field: str | None = "response_format"
    output_format_field: str | None = "output_format"
    #: resolutions the dialect can ask for; a `size_field` dialect can ask only for sizes that fit
    #: OPENAI_MAX_SIZE (no provider documents 4K size strings)
    resolutions: tuple[str, ...] = ("1K", "2K", "4K")


def size_fits(width: int, height: int) -> bool:
    """Whether WxH is a size OpenAI's `size` field documents: within 3840x2160 either way round, sides
    divisible by 16, ratio within 1:3..3:1."""
    long_side, short_side = max(width, height), min(width, height)
    return (
        long_side <= OPENAI_MAX_SIZE[0]
        and short_side <= OPENAI_MAX_SIZE[1]
        and width % 16 == 0
        and height % 16 == 0
        and long_side <= 3 * short_side
    )
