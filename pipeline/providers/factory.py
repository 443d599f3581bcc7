"""Build the adapter a provider config names. Called at the composition root, with a shared client.

kind            adapter
gemini          GeminiProvider (x-goog-api-key, or Bearer when auth: bearer)
sandbox         GeminiProvider against the project's simulator (x-goog-api-key, cost from usage)
gemini-batch    make_batch_client() -> GeminiBatchClient for batches. make_provider() gives a GeminiProvider
                for single calls, which Google bills at the standard rates (usage priced as such; only
                when an answer lacks usage does the preset's batch table price it)
openai-images   OpenAIImagesProvider; a dialect with an inline size (AIML) passes larger references as presigned
                URLs of `storage`
replicate       ReplicateProvider
kie             KieProvider (Kie.ai Market task API); references become URLs through `storage` (presigned) or
                Kie's upload API; with `inbox` and `public_base_url`, tasks carry a callback URL
"""

from __future__ import annotations

import httpx

from pipeline.clock import Clock, utcnow
from pipeline.config import ProviderConfig
from pipeline.providers.adapter import AdapterOptions, OutputGuard
from pipeline.providers.base import Provider
from pipeline.providers.gemini import GeminiProvider
from pipeline.providers.gemini_batch import GeminiBatchClient
from pipeline.providers.kie import CallbackInbox, Callbacks, KieProvider
from pipeline.providers.kie_refs import reference_host
from pipeline.providers.openai_images import OpenAIImagesProvider
from pipeline.providers.reference_urls import PresignedReferences
from pipeline.providers.replicate import ReplicateProvider
from pipeline.storage.base import Storage


def make_provider(
    config: ProviderConfig,
    *,
    api_key: str | None,
    client: httpx.Client,
    region: str | None = None,
    clock: Clock = utcnow,
    output_guard: OutputGuard | None = None,
    storage: Storage | None = None,
    inbox: CallbackInbox | None = None,
    public_base_url: str | None = None,
) -> Provider:
    """The adapter for `config.kind`. No I/O; raises InputError when the config cannot work (no base_url).
    `output_guard` checks URLs a provider answers with before they are downloaded (see runtime); `storage`
    (the backend itself, not the spool), `inbox` and `public_base_url` serve task APIs (kie)."""
    kw: AdapterOptions = {"region": region, "clock": clock, "output_guard": output_guard}
    if config.kind == "sandbox":
        config = config.model_copy(update={"auth": "header"})
        return GeminiProvider(config, api_key, client, **kw)
    if config.kind in ("gemini", "gemini-batch"):
        return GeminiProvider(config, api_key, client, **kw)
    if config.kind == "openai-images":
        return OpenAIImagesProvider(config, api_key, client, references=presigned_references(config, storage), **kw)
    if config.kind == "replicate":
        return ReplicateProvider(config, api_key, client, **kw)
    if config.kind == "kie":
        refs = reference_host(config, storage=storage, client=client, api_key=api_key, clock=clock)
        callbacks = Callbacks(inbox, public_base_url) if inbox is not None and public_base_url else None
        return KieProvider(config, api_key, client, region=region, clock=clock, references=refs, callbacks=callbacks)
    raise AssertionError(f"unhandled provider kind {config.kind!r}")  # pragma: no cover - Literal is closed


def presigned_references(config: ProviderConfig, storage: Storage | None) -> PresignedReferences | None:
    """Where an openai-images dialect with an inline size sends larger references: presigned URLs of `storage`
    (None without storage, or for a dialect that takes every reference inline or as a file)."""
    limit = config.images.max_inline_reference_bytes
    if storage is None or limit is None:
        return None
    return PresignedReferences(storage, config.reference_url_ttl_s, provider=config.name,
                               without_urls=f"references over {limit} bytes need S3 storage (presigned URLs)")


def make_batch_client(
    config: ProviderConfig,
    *,
    api_key: str | None,
    client: httpx.Client,
    region: str | None = None,
    clock: Clock = utcnow,
) -> GeminiBatchClient:
    """The batch client for a gemini-batch (or gemini / sandbox) provider."""
    return GeminiBatchClient(config, api_key, client, region=region, clock=clock)
