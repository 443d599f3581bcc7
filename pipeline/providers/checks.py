"""Checks made when a manifest is loaded (`validate`, `submit`, `run`), before anything is written: a job a
provider's documented API cannot take is refused with a message naming the provider and the fix (exit code 2),
never at call time.

One registry, by provider kind (CHECKS): each check sees the settings, the job's providers of its kind and what
every item asks for, and says why they cannot run it, or None. `manifest_refusal` runs them in the registry's
order and returns the first refusal; the caller raises it as an InputError naming the manifest.

    kie             at most MAX_IMAGE_INPUTS references an item; references need a way to become URLs (S3
                    storage: presigned URLs, or Kie's file upload API at upload_base_url)
    openai-images   what the preset's dialect can express (pipeline.providers.openai_images.dialect_refusal):
                    resolutions, sizes, reference count, references too large to inline without presigned URLs
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pipeline.config import ProviderConfig, ProviderKind, Settings
from pipeline.providers.kie_wire import MAX_IMAGE_INPUTS
from pipeline.providers.openai_images import dialect_refusal


@dataclass(frozen=True)
class ItemAsk:
    """What one item asks of a provider, as far as the checks care."""

    key: str
    resolution: str
    aspect_ratio: str
    reference_sizes: tuple[int, ...] = ()


#: (settings, the job's providers of the check's kind, the items) -> why they cannot run, or None
Check = Callable[[Settings, Sequence[ProviderConfig], Sequence[ItemAsk]], str | None]


def storage_presigns(settings: Settings) -> bool:
    """Whether the configured storage can hand out presigned URLs (S3; files cannot)."""
    return settings.storage_url.strip().lower().startswith("s3://")


def kie_check(settings: Settings, configs: Sequence[ProviderConfig], items: Sequence[ItemAsk]) -> str | None:
    """Kie.ai takes at most MAX_IMAGE_INPUTS references, and only as URLs."""
    most = max((len(i.reference_sizes) for i in items), default=0)
    if most == 0:
        return None
    for cfg in configs:
        if most > MAX_IMAGE_INPUTS:
            return (f"provider {cfg.name!r} (Kie.ai) takes at most {MAX_IMAGE_INPUTS} references per item (an item "
                    f"has {most}): remove {cfg.name} from providers or use fewer references")
        if not storage_presigns(settings) and not cfg.upload_base_url:
            return (f"provider {cfg.name!r} (Kie.ai) takes references only as URLs: set storage_url to s3://... "
                    f"(references are passed as presigned URLs) or providers.{cfg.name}.upload_base_url (Kie's file "
                    f"upload API), or remove it from providers")
    return None


def images_check(settings: Settings, configs: Sequence[ProviderConfig], items: Sequence[ItemAsk]) -> str | None:
    """The first item some openai-images preset's dialect cannot express."""
    presigns = storage_presigns(settings)
    for item in items:
        for cfg in configs:
            why = refusal(cfg, item.resolution, item.aspect_ratio, item.reference_sizes, presigns=presigns)
            if why:
                return f"item {item.key}: {why}"
    return None


#: the checks, by provider kind, in the order they run
CHECKS: tuple[tuple[ProviderKind, Check], ...] = (
    ("kie", kie_check),
    ("openai-images", images_check),
)


def refusal(config: ProviderConfig, resolution: str, aspect_ratio: str, reference_sizes: Sequence[int], *,
            presigns: bool) -> str | None:
    """Why `config` cannot take one request, or None (`presigns`: the storage can hand out presigned URLs)."""
    if config.kind == "openai-images":
        return dialect_refusal(config, resolution, aspect_ratio, list(reference_sizes), can_pass_urls=presigns)
    return None


def manifest_refusal(settings: Settings, providers: Iterable[str], items: Iterable[ItemAsk]) -> str | None:
    """The first refusal of the job's providers (names configured in `settings`) for these items, or None."""
    configs = [settings.provider(n) for n in providers if n in settings.providers]
    asks = list(items)
    for kind, check in CHECKS:
        of_kind = [c for c in configs if c.kind == kind]
        if of_kind:
            why = check(settings, of_kind, asks)
            if why:
                return why
    return None
