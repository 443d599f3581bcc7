"""Expansion: a loaded Manifest -> one ItemSpec per item (prompt and key rendered, references hashed).

Nothing is written; every problem is an InputError naming the item's place ("jobs/x.yaml:12 (item sku-002)").

    cache_key = sha256(canonical JSON of
                       {model, prompt, resolution, aspect_ratio, format, references: [sha256, ...]})
    spec_hash = sha256(canonical JSON of the same plus output_key and tags)

The provider is not part of either: the same model through another reseller is the same request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.manifest.schema import DEFAULT_OUTPUT_KEY, Item, Manifest
from pipeline.manifest.templates import TemplateRenderer
from pipeline.manifest.values import text_problem
from pipeline.presets import MODEL
from pipeline.providers.base import Reference
from pipeline.storage.keys import MAX_KEY_BYTES, UnsafeKey, sanitize_key

#: top-level directories of the storage root that hold the pipeline's own objects (no output key may be in them)
RESERVED_KEY_DIRS = ("_cache", "_thumbs")
#: file extension of each output format (the `format` template variable)
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}

FetchReference = Callable[[str, Path], Reference]


@dataclass(frozen=True)
class ReferenceSpec:
    """A reference as resolved at expansion. `source` is the absolute path for local files, else the URI."""

    source: str
    sha256: str
    mime_type: str
    #: its size in bytes (providers that take references inline have a limit)
    size_bytes: int = 0


@dataclass(frozen=True)
class ItemSpec:
    key: str
    index: int
    prompt: str
    resolution: str
    aspect_ratio: str
    output_format: str
    output_key: str
    references: tuple[ReferenceSpec, ...]
    tags: tuple[str, ...]
    #: the item's template variables as strings (lists and mappings as compact JSON)
    fields: dict[str, str]
    cache_key: str
    spec_hash: str


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _request_body(*, model: str, prompt: str, resolution: str, aspect_ratio: str, output_format: str,
                  reference_sha256s: Sequence[str]) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "resolution": resolution, "aspect_ratio": aspect_ratio,
            "format": output_format, "references": list(reference_sha256s)}


def cache_key_for(*, model: str, prompt: str, resolution: str, aspect_ratio: str, output_format: str,
                  reference_sha256s: Sequence[str]) -> str:
    """The prompt-hash cache key of one image request (hex sha256)."""
    body = _request_body(model=model, prompt=prompt, resolution=resolution, aspect_ratio=aspect_ratio,
                         output_format=output_format, reference_sha256s=reference_sha256s)
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def spec_hash_for(*, model: str, prompt: str, resolution: str, aspect_ratio: str, output_format: str,
                  reference_sha256s: Sequence[str], output_key: str, tags: Sequence[str]) -> str:
    """Hash of an item's whole spec: changes when anything that affects its output changes."""
    body = _request_body(model=model, prompt=prompt, resolution=resolution, aspect_ratio=aspect_ratio,
                         output_format=output_format, reference_sha256s=reference_sha256s)
    body.update(output_key=output_key, tags=list(tags))
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def expand_items(manifest: Manifest, *, fetch_reference: FetchReference,
                 model: str = MODEL) -> list[ItemSpec]:
    """Render and resolve every item. `fetch_reference(source, base_dir)` runs once per distinct source."""
    renderer = TemplateRenderer()
    fetched: dict[str, tuple[str, Reference]] = {}
    specs: list[ItemSpec] = []
    keys: dict[str, Item] = {}
    for index, item in enumerate(manifest.items):
        spec = _expand_one(manifest, item, index, renderer, fetched, fetch_reference, model)
        first = keys.setdefault(spec.output_key, item)
        if first is not item:
            raise InputError(f"output key {spec.output_key!r} is also the key of {first.place}; make the key "
                             "template unique per item (it usually contains {{ id }})", where=item.place)
        specs.append(spec)
    return specs


def template_context(manifest: Manifest, item: Item, index: int) -> dict[str, Any]:
    """Variables a template sees: caller extras < item fields < what the pipeline sets."""
    fmt = item.format or manifest.defaults.format
    return {
        **manifest.extra_vars,
        **item.vars,
        "id": item.id,
        "job": manifest.job,
        "index": index,
        "resolution": item.resolution or manifest.defaults.resolution,
        "aspect_ratio": item.aspect_ratio or manifest.defaults.aspect_ratio,
        "format": EXTENSIONS[fmt],
        "output_format": fmt,
        "tags": list(_tags(manifest, item)),
    }


def _tags(manifest: Manifest, item: Item) -> tuple[str, ...]:
    tags = item.tags if item.tags is not None else manifest.tags
    return tuple(dict.fromkeys(tags))


def _expand_one(manifest: Manifest, item: Item, index: int, renderer: TemplateRenderer,
                fetched: dict[str, tuple[str, Reference]], fetch_reference: FetchReference,
                model: str) -> ItemSpec:
    place = item.place
    ctx = template_context(manifest, item, index)
    prompt_source = item.prompt or manifest.prompt
    if prompt_source is None:
        raise InputError("no prompt: give the manifest a `prompt:` or the item one", where=place)
    prompt = renderer.render(prompt_source, ctx, what="prompt", where=place)
    if not prompt:
        raise InputError("the prompt renders empty", where=place)
    problem = text_problem(prompt)
    if problem:
        raise InputError(f"the rendered prompt: {problem}", where=place)
    key_source = item.output_key or (manifest.output.key if manifest.output else DEFAULT_OUTPUT_KEY)
    rendered_key = renderer.render(key_source, ctx, what="output key", where=place,
                                   max_chars=4 * MAX_KEY_BYTES)
    try:
        output_key = sanitize_key(rendered_key)
    except UnsafeKey as e:
        raise InputError(f"unsafe output key: {e}", where=place) from None
    if output_key.split("/", 1)[0] in RESERVED_KEY_DIRS:
        raise InputError(f"output key {output_key!r} is inside {output_key.split('/', 1)[0]}/, which holds the "
                         "pipeline's own cache and thumbnails", where=place)
    references = tuple(_reference(source, manifest.base_dir, fetched, fetch_reference, place)
                       for source in item.references)
    resolution, aspect_ratio = str(ctx["resolution"]), str(ctx["aspect_ratio"])
    fmt = str(ctx["output_format"])
    shas = [r.sha256 for r in references]
    tags = _tags(manifest, item)
    return ItemSpec(
        key=item.id, index=index, prompt=prompt, resolution=resolution, aspect_ratio=aspect_ratio,
        output_format=fmt, output_key=output_key, references=references, tags=tags,
        fields={name: _as_text(value) for name, value in item.vars.items()},
        cache_key=cache_key_for(model=model, prompt=prompt, resolution=resolution, aspect_ratio=aspect_ratio,
                                output_format=fmt, reference_sha256s=shas),
        spec_hash=spec_hash_for(model=model, prompt=prompt, resolution=resolution, aspect_ratio=aspect_ratio,
                                output_format=fmt, reference_sha256s=shas, output_key=output_key, tags=tags),
    )


def _reference(source: str, base_dir: Path, fetched: dict[str, tuple[str, Reference]],
               fetch_reference: FetchReference, place: str) -> ReferenceSpec:
    hit = fetched.get(source)
    if hit is None:
        try:
            ref = fetch_reference(source, base_dir)
        except InputError as e:
            detail = f"{e.where}: {e.message}" if e.where else e.message
            raise InputError(detail, where=place) from None
        hit = (_recorded_source(source, base_dir), ref)
        fetched[source] = hit
    recorded, ref = hit
    return ReferenceSpec(source=recorded, sha256=ref.sha256, mime_type=ref.mime_type, size_bytes=len(ref.data))


def _recorded_source(source: str, base_dir: Path) -> str:
    """URIs as written; local paths made absolute so a worker can read them from any directory."""
    if "://" in source:
        return source
    try:
        return str((base_dir / source).resolve())
    except (OSError, RuntimeError, ValueError):
        return source


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return str(value)
