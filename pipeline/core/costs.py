"""Estimates (reserved before a call) and list prices (the basis of "saved")."""

from __future__ import annotations

from decimal import Decimal

from pipeline.config import ProviderConfig
from pipeline.money import usd
from pipeline.providers.pricing import STANDARD_RATES, list_price, table_cost

#: thinking tokens we reserve for when a provider bills from usage (observed 291-748; reserve generously)
THINKING_TOKENS_RESERVE = 2000
#: prompt tokens an input image is billed at (the pricing page's 560)
INPUT_IMAGE_TOKENS = 560
MILLION = Decimal(1_000_000)


def list_cost(resolution: str, n_references: int) -> Decimal:
    """Google's official list price for the same image: the per-image output price plus input images."""
    return usd(list_price(resolution) + n_references * list_price("input_image"))


def estimate_cost(provider: ProviderConfig, resolution: str, n_references: int, prompt_chars: int) -> Decimal | None:
    """An upper bound of what one call may be billed, or None when the provider has no price for it.

    Flat-priced providers bill the table price (+ input images when priced). Usage-billed providers (Google's
    token billing) also bill thinking and prompt tokens, so the reserve adds a bound for those; settlement
    replaces the reserve with the real cost."""
    total = table_cost(provider, resolution, n_references)
    if total is None:
        return None
    if provider.cost_from_usage:
        prompt_tokens = prompt_chars // 2 + 64 + n_references * INPUT_IMAGE_TOKENS
        rates = STANDARD_RATES
        total += (THINKING_TOKENS_RESERVE * rates.text_output + prompt_tokens * rates.input) / MILLION
    return usd(total)
