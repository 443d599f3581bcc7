"""Manifests: schema (pydantic), loading (YAML/CSV/JSONL with line numbers), sandboxed Jinja2, expansion.

    load_manifest(path, extra_vars=...) -> Manifest          validated; reads only, never writes
    expand_items(manifest, fetch_reference=...) -> [ItemSpec] prompts and keys rendered, references hashed
    validate_manifest(path) -> ManifestSummary                both, with no network access

Every invalid input raises pipeline.errors.InputError naming the place ("jobs/x.yaml:12 (item sku-002)").
"""

from pipeline.manifest.expand import (
    ItemSpec,
    ReferenceSpec,
    cache_key_for,
    expand_items,
    spec_hash_for,
)
from pipeline.manifest.itemfiles import MAX_ITEMS_FILE_BYTES
from pipeline.manifest.load import MAX_MANIFEST_BYTES, load_manifest
from pipeline.manifest.schema import DEFAULT_OUTPUT_KEY, MAX_ITEMS, MAX_REFERENCES, Item, Manifest
from pipeline.manifest.templates import MAX_PROMPT_CHARS
from pipeline.manifest.validate import ManifestSummary, validate_manifest

__all__ = [
    "DEFAULT_OUTPUT_KEY",
    "MAX_ITEMS",
    "MAX_ITEMS_FILE_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_PROMPT_CHARS",
    "MAX_REFERENCES",
    "Item",
    "ItemSpec",
    "Manifest",
    "ManifestSummary",
    "ReferenceSpec",
    "cache_key_for",
    "expand_items",
    "load_manifest",
    "spec_hash_for",
    "validate_manifest",
]
