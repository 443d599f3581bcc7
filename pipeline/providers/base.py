"""The provider seam: one method to make an image, one to price it. Errors: pipeline.errors.

An adapter translates its wire format and httpx errors into ImageResult or a ProviderError subclass, at
exactly that boundary. It never retries by itself (the pipeline decides, from the error class) and never
logs or raises its API key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

#: output pixel sizes for gemini-3-pro-image-preview, by aspect ratio then resolution (PROVIDERS.md §1)
SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "1:1": {"1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)},
    "2:3": {"1K": (848, 1264), "2K": (1696, 2528), "4K": (3392, 5056)},
    "3:2": {"1K": (1264, 848), "2K": (2528, 1696), "4K": (5056, 3392)},
    "3:4": {"1K": (896, 1200), "2K": (1792, 2400), "4K": (3584, 4800)},
    "4:3": {"1K": (1200, 896), "2K": (2400, 1792), "4K": (4800, 3584)},
    "4:5": {"1K": (928, 1152), "2K": (1856, 2304), "4K": (3712, 4608)},
    "5:4": {"1K": (1152, 928), "2K": (2304, 1856), "4K": (4608, 3712)},
    "9:16": {"1K": (768, 1376), "2K": (1536, 2752), "4K": (3072, 5504)},
    "16:9": {"1K": (1376, 768), "2K": (2752, 1536), "4K": (5504, 3072)},
    "21:9": {"1K": (1584, 672), "2K": (3168, 1344), "4K": (6336, 2688)},
}
ASPECT_RATIOS = tuple(SIZES)
RESOLUTIONS = ("1K", "2K", "4K")
#: output image tokens per image (all ratios): 1K/2K 1120, 4K 2000
IMAGE_TOKENS = {"1K": 1120, "2K": 1120, "4K": 2000}


def expected_size(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    return SIZES[aspect_ratio][resolution]


@dataclass(frozen=True)
class Reference:
    """A reference image, already fetched and hashed."""

    data: bytes
    mime_type: str
    sha256: str


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    resolution: str
    aspect_ratio: str
    output_format: str = "png"
    references: tuple[Reference, ...] = ()
    #: a stable key for this request (the item id); batch adapters match results back by it
    key: str = ""


@dataclass(frozen=True)
class ImageResult:
    data: bytes
    mime_type: str
    cost_usd: Decimal
    #: "usage" when priced from the provider's usage report, "price_table" otherwise
    cost_source: str
    http_status: int = 200
    usage: dict[str, Any] = field(default_factory=dict)
    remote_id: str | None = None


@dataclass
class CallHooks:
    """Callbacks an adapter makes during a call. `submitted(remote_id)` is called (and must return) before
    the adapter waits on a remote handle, so the handle is saved before any wait (Replicate, batch)."""

    submitted: Callable[[str], None] = lambda remote_id: None


class Provider(Protocol):
    name: str

    def generate(self, request: ImageRequest, hooks: CallHooks) -> ImageResult:
        """Make one image. Raises a pipeline.errors.ProviderError subclass on any failure."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ResumableProvider(Provider, Protocol):
    """A provider whose calls have a remote handle (Replicate): an attempt that failed with a
    ProviderError carrying `remote_id` is continued with resume() instead of paying for a new call."""

    def resume(self, remote_id: str, request: ImageRequest) -> ImageResult:
        """Wait for the remote work `remote_id` and return its image. Raises ProviderError like generate()."""
        ...
