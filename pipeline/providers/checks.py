"""Checks made at validate time, before anything is submitted: a request a provider's documented API cannot
express is refused with a message naming the provider and the fix (exit code 2), never at call time."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pipeline.config import ProviderConfig
from pipeline.providers.openai_images import dialect_refusal


def refusal(config: ProviderConfig, resolution: str, aspect_ratio: str, reference_sizes: Sequence[int]) -> str | None:
    """Why `config` cannot take this request, or None."""
    if config.kind == "openai-images":
        return dialect_refusal(config, resolution, aspect_ratio, list(reference_sizes))
    return None


def first_refusal(
    configs: Iterable[ProviderConfig], items: Iterable[tuple[str, str, str, Sequence[int]]]
) -> str | None:
    """The first (item key, resolution, aspect ratio, reference sizes) some provider refuses, as a message."""
    cfgs = list(configs)
    for key, resolution, ratio, sizes in items:
        for cfg in cfgs:
            why = refusal(cfg, resolution, ratio, sizes)
            if why:
                return f"item {key}: {why}"
    return None
