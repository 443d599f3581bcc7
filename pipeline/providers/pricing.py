"""What an image costs: Google's token rates, the configured per-image table, Google's list price.

Three sources, in the order an adapter tries them (the result's `cost_source` says which one priced it):
- "usage": the provider's usageMetadata at Google's per-million-token rates (only when the config says
  the provider bills Google's tokens: `cost_from_usage`), batch at half the rates;
- "price_table": the config's per-image price for the resolution plus `input_image` per reference;
- neither: the call is not made. `require_price` raises `PricingError` before any request, so an image
  is never bought at an unknown price. (A provider that prices from usage but answers without usage and
  has no table is the one case left; `cost_or_list` then falls back to Google's list price and says so.)

Everything is Decimal, computed exactly (no rounding here; storage quantizes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pipeline.config import ProviderConfig
from pipeline.errors import ProviderLevelError
from pipeline.presets import LIST_PRICES

_MILLION = Decimal(1_000_000)
#: batch mode is billed at half the standard rates (PROVIDERS.md §3, §4)
BATCH_FACTOR = Decimal("0.5")

#: cost_source values
USAGE = "usage"
PRICE_TABLE = "price_table"
LIST_ESTIMATE = "list_estimate"


@dataclass(frozen=True)
class TokenRates:
    """USD per million tokens for gemini-3-pro-image-preview (PROVIDERS.md §4, paid tier)."""

    image_output: Decimal
    text_output: Decimal  # text and thinking
    input: Decimal  # prompt text and input images

    def scaled(self, factor: Decimal) -> TokenRates:
        return TokenRates(self.image_output * factor, self.text_output * factor, self.input * factor)


#: standard-tier rates ($120 / $12 / $2 per million); batch is the same scaled by BATCH_FACTOR
STANDARD_RATES = TokenRates(image_output=Decimal("120"), text_output=Decimal("12"), input=Decimal("2"))
RATES: dict[str, TokenRates] = {"standard": STANDARD_RATES, "batch": STANDARD_RATES.scaled(BATCH_FACTOR)}


class PricingError(ProviderLevelError):
    """The provider has no price for this request. Raised before the call: nothing was sent or billed.
    A configuration fault, so the provider is paused (with this message) until an operator adds the price."""

    error_class = "unpriced"


def _count(value: Any) -> int:
    """A token count: int64 counts may arrive as strings; anything else counts as 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _modality_tokens(details: Any, modality: str) -> int | None:
    if not isinstance(details, list):
        return None
    found = None
    for d in details:
        if isinstance(d, Mapping) and d.get("modality") == modality:
            found = (found or 0) + _count(d.get("tokenCount"))
    return found


def gemini_usage_cost(usage: Mapping[str, Any] | None, *, batch: bool) -> Decimal | None:
    """Cost of one generateContent call from its usageMetadata, or None when usage can't price it.

    IMAGE tokens (from candidatesTokensDetails) at the image rate; the rest of candidatesTokenCount plus
    thoughtsTokenCount at the text rate; promptTokenCount (text and input images) at the input rate.
    Usage without an IMAGE detail gives None: pricing image tokens as text would undercharge tenfold."""
    if not usage:
        return None
    image = _modality_tokens(usage.get("candidatesTokensDetails"), "IMAGE")
    if image is None:
        return None
    candidates = _count(usage.get("candidatesTokenCount"))
    other = max(candidates - image, 0) + _count(usage.get("thoughtsTokenCount"))
    prompt = _count(usage.get("promptTokenCount"))
    r = RATES["batch" if batch else "standard"]
    return (image * r.image_output + other * r.text_output + prompt * r.input) / _MILLION


def blocked_call_cost(usage: Mapping[str, Any] | None, *, batch: bool) -> Decimal | None:
    """What a call that made no image costs (a blocked prompt, a filtered image, a text-only refusal): its
    prompt tokens at the input rate, its thinking and text output at the text rate; no image tokens (see
    pipeline.providers.gemini_answer for the billing rule and its source). None when usage reports nothing."""
    if not usage:
        return None
    image = _modality_tokens(usage.get("candidatesTokensDetails"), "IMAGE") or 0
    other = max(_count(usage.get("candidatesTokenCount")) - image, 0) + _count(usage.get("thoughtsTokenCount"))
    prompt = _count(usage.get("promptTokenCount"))
    if not other and not prompt:
        return None
    r = RATES["batch" if batch else "standard"]
    return (other * r.text_output + prompt * r.input) / _MILLION


def table_cost(config: ProviderConfig, resolution: str, n_refs: int) -> Decimal | None:
    """Per-image price at `resolution` plus `input_image` per reference (0 when the table has none:
    resellers bill flat), or None when the resolution has no price."""
    price = config.price_for(resolution)
    if price is None:
        return None
    return price + config.prices.get("input_image", Decimal(0)) * n_refs


def list_price(resolution: str) -> Decimal:
    """Google's list price per image at `resolution` (standard tier): the basis of list_cost / saved."""
    return Decimal(LIST_PRICES[resolution])


def require_price(config: ProviderConfig, resolution: str, *, usage_ok: bool = True) -> None:
    """Raise PricingError unless a call at `resolution` can be priced. Call before sending anything.
    `usage_ok`: the adapter can price from Gemini usage (only the Gemini adapters can)."""
    if (usage_ok and config.cost_from_usage) or config.price_for(resolution) is not None:
        return
    raise PricingError(
        f"no price for {resolution} images: set providers.{config.name}.prices.{resolution}",
        provider=config.name,
    )


def cost_or_list(
    config: ProviderConfig, usage: Mapping[str, Any] | None, resolution: str, n_refs: int, *, batch: bool
) -> tuple[Decimal, str]:
    """(cost, cost_source) for a call that made an image: usage when the config trusts it, else the table,
    else (only when pricing from usage was promised but the answer had none) Google's list price."""
    if config.cost_from_usage:
        cost = gemini_usage_cost(usage, batch=batch)
        if cost is not None:
            return cost, USAGE
    cost = table_cost(config, resolution, n_refs)
    if cost is not None:
        return cost, PRICE_TABLE
    estimate = list_price(resolution) + Decimal(LIST_PRICES["input_image"]) * n_refs
    return (estimate * BATCH_FACTOR if batch else estimate), LIST_ESTIMATE
